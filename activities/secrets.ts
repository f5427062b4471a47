import { randomBytes } from 'node:crypto';
import { ApplicationFailure, Context } from '@temporalio/activity';
import type { NatsConnection } from 'nats';
import pg from 'pg';
import type { Registry } from 'prom-client';
import { SECRET_ROTATED_SUBJECT, type SecretRotated } from '../lib/db-credentials';
import { TOPICS } from '../lib/kafka';
import type { KafkaBatcher } from '../lib/kafka-batcher';
import type { Logger } from '../lib/logger';
import { prom } from '../lib/metrics';
import { primaryAddress } from '../lib/db-topology';
import { serverOf } from '../lib/postgres';
import { DB_APP_USERS, DB_ROTATOR_SECRET, findSecret, readMeta, readVersion, writeLabels, writeVersion, type SecretDef } from '../lib/secrets';
import { readCurrentSecretData } from '../lib/third-party/credentials';
import { serviceUrl, type ThirdPartyService } from '../lib/third-party/services';
import type { VaultClient } from '../lib/vault';

export type SecretDeps = {
  vault: VaultClient;
  nats?: NatsConnection;
  events: KafkaBatcher;
  logger: Logger;
  registry?: Registry;
  /** Where PostgreSQL is (the processes' URL; the login used is flowgate_rotator's, from Vault). */
  databaseUrl: string;
  /** The topology (NATS) whose primary the rotation acts on, when there is one. */
  databaseCluster?: string;
  services: ThirdPartyService[];
};

type ApiKeyData = { value: string; key_id: string };
type DbLogin = { username: string; password: string };
export type SecretRef = { secret: string };
export type VersionRef = SecretRef & { version: string };

/** The workflow id this activity runs for (a rotation's: `rb-rotate-secret-…`), or undefined outside an activity. */
const runOfActivity = (): string | undefined => {
  try {
    return Context.current().info.workflowExecution?.workflowId;
  } catch {
    return undefined;
  }
};

/** Whether a version read back holds exactly the fields written (a write whose answer was lost). */
const sameFields = (read: Record<string, string>, written: Record<string, string>): boolean =>
  Object.keys(written).length === Object.keys(read).length && Object.entries(written).every(([k, v]) => read[k] === v);

const secretOf = (path: string): SecretDef => {
  const def = findSecret(path);
  if (!def) throw ApplicationFailure.nonRetryable(`no rotatable secret at ${path}`, 'UnknownSecret');
  return def;
};

/** The four rotation steps and their undo, per kind of target (an API key at a provider, a PostgreSQL login). */
export function secretActivities(deps: SecretDeps) {
  const rotations = deps.registry
    ? new prom.Counter({ name: 'secret_rotations_total', help: 'Secret rotations by outcome', labelNames: ['secret', 'outcome'], registers: [deps.registry] })
    : undefined;

  const provider = async (def: SecretDef, key: string, method: string, path: string, body?: unknown) => {
    const svc = deps.services.find((s) => s.name === def.service);
    if (!svc) throw ApplicationFailure.nonRetryable(`no third party ${def.service}`, 'UnknownThirdParty');
    const res = await fetch(serviceUrl(svc, path), {
      method, headers: { authorization: `Bearer ${key}`, ...(body ? { 'content-type': 'application/json' } : {}) },
      body: body ? JSON.stringify(body) : undefined, signal: AbortSignal.timeout(svc.timeout_ms),
    });
    const text = await res.text();
    return { status: res.status, body: (text ? JSON.parse(text) : null) as Record<string, unknown> | null };
  };

  /** The primary: the topology's, after a failover, rather than the URL's. */
  const dbServer = async () => ({ ...serverOf(deps.databaseUrl), ...(await primaryAddress(deps.nats, deps.databaseCluster ?? 'main', deps.databaseUrl)) });

  /** A connection as flowgate_rotator (CREATEROLE), whose own login is in Vault. */
  const asRotator = async <T>(fn: (c: pg.Client) => Promise<T>): Promise<T> => {
    const { data } = await readCurrentSecretData<DbLogin>(deps.vault, DB_ROTATOR_SECRET);
    const c = new pg.Client({ ...(await dbServer()), user: data.username, password: data.password });
    await c.connect();
    try {
      return await fn(c);
    } finally {
      await c.end().catch(() => undefined);
    }
  };

  /** True when `login` opens a session and can read as the application. */
  const loginWorks = async (login: DbLogin): Promise<{ ok: boolean; detail: string }> => {
    const c = new pg.Client({ ...(await dbServer()), user: login.username, password: login.password, connectionTimeoutMillis: 5000 });
    try {
      await c.connect();
      await c.query('SELECT count(*) FROM schema_migrations');
      return { ok: true, detail: `${login.username} logs in and reads` };
    } catch (err) {
      return { ok: false, detail: `${login.username}: ${(err as Error).message}` };
    } finally {
      await c.end().catch(() => undefined);
    }
  };

  const testVersion = async (def: SecretDef, data: Record<string, string>) => {
    if (def.kind === 'api-key') {
      const r = await provider(def, data.value!, 'GET', '/v1/account');
      return { ok: r.status === 200, detail: `the provider answered ${r.status}` };
    }
    return loginWorks(data as DbLogin);
  };

  const event = (type: string, data: Record<string, unknown>) =>
    deps.events.sendWithin(2000, TOPICS.configChanges, '_platform', { type, at: new Date().toISOString(), ...data });

  return {
    /** Read-only: the labels and whether the current version works on its target. */
    async inspectSecret({ secret }: SecretRef) {
      const def = secretOf(secret);
      const meta = await readMeta(deps.vault, secret);
      const current = meta.labels.current ?? String(meta.latest);
      const check = await testVersion(def, await readVersion(deps.vault, secret, current));
      return { kind: def.kind, labels: meta.labels, latest: meta.latest, current_works: check.ok, detail: check.detail };
    },

    /**
     * Step 1: a new version labelled `pending`, written with check-and-set on the version the run
     * saw, so two rotations cannot both write; refused while another rotation's pending exists.
     */
    async createPendingSecret({ secret }: SecretRef): Promise<{ version: string; previous: string }> {
      const def = secretOf(secret);
      const meta = await readMeta(deps.vault, secret);
      const run = runOfActivity();
      const currentVersion = meta.labels.current ?? String(meta.latest);
      if (meta.labels.pending) {
        // An earlier attempt of this run wrote and labelled it, and its answer was lost: the same answer again.
        const pending = await readVersion<Record<string, string>>(deps.vault, secret, meta.labels.pending).catch(() => undefined);
        if (run && pending?.rotation_run === run) return { version: meta.labels.pending, previous: currentVersion };
        throw ApplicationFailure.nonRetryable(`a rotation of ${secret} is in progress (pending version ${meta.labels.pending})`, 'RotationInProgress');
      }
      // The version an earlier attempt wrote but did not get to label (its labels write failed, or its
      // answer was lost): labelled now, rather than a second key minted and the first orphaned. Runs
      // of one secret's rotation share their workflow id, so a run also takes over one a failed run left.
      const latest = String(meta.latest);
      if (run && latest !== currentVersion && !Object.values(meta.labels).includes(latest)) {
        const written = await readVersion<Record<string, string>>(deps.vault, secret, latest).catch(() => undefined);
        if (written?.rotation_run === run) {
          await writeLabels(deps.vault, secret, { ...meta.labels, current: currentVersion, pending: latest });
          return { version: latest, previous: currentVersion };
        }
      }
      const current = await readVersion<Record<string, string>>(deps.vault, secret, currentVersion);
      let next: Record<string, string>;
      if (def.kind === 'api-key') {
        // The provider mints keys: the pending key exists at the provider from here on.
        const r = await provider(def, current.value!, 'POST', '/v1/api_keys');
        if (r.status !== 200) throw ApplicationFailure.retryable(`the provider refused to create a key (${r.status})`, 'TargetRefused');
        next = { value: String(r.body!.secret), key_id: String(r.body!.id) };
      } else {
        const other = DB_APP_USERS.find((u) => u !== current.username) ?? DB_APP_USERS[0];
        next = { username: other, password: randomBytes(24).toString('base64url') };
      }
      if (run) next.rotation_run = run;
      let version: number;
      try {
        version = await writeVersion(deps.vault, secret, next, meta.latest);
      } catch (err) {
        // Vault may have written it and the answer been lost: the version after the one we saw,
        // holding exactly what we wrote, is ours. Read back, it is either ours or not there (the
        // minted key then goes); when Vault cannot even be read, the key stays and the retry
        // takes over the version if it was written (above).
        const ours = meta.latest + 1;
        const landed = await readMeta(deps.vault, secret)
          .then(async (m) => m.latest >= ours && sameFields(await readVersion(deps.vault, secret, ours), next))
          .catch(() => undefined);
        const failure = (err as Error).message;
        if (landed === undefined) throw ApplicationFailure.retryable(`writing the pending version of ${secret} failed, and Vault could not be read back: ${failure}`, 'VaultUnavailable');
        if (!landed) {
          if (def.kind === 'api-key') await provider(def, current.value!, 'DELETE', `/v1/api_keys/${next.key_id}`).catch(() => undefined);
          if (/check-and-set/i.test(failure)) throw ApplicationFailure.nonRetryable(`another writer changed ${secret} first (check-and-set): ${failure}`, 'RotationConflict');
          throw ApplicationFailure.retryable(`writing the pending version of ${secret} failed: ${failure}`, 'VaultUnavailable');
        }
        version = ours;
      }
      await writeLabels(deps.vault, secret, { ...meta.labels, current: currentVersion, pending: String(version) });
      return { version: String(version), previous: currentVersion };
    },

    /** Step 2: the target accepts the pending version (a PostgreSQL login gets its password; a provider key exists already). */
    async setPendingOnTarget({ secret, version }: VersionRef): Promise<{ detail: string }> {
      const def = secretOf(secret);
      const data = await readVersion<Record<string, string>>(deps.vault, secret, version);
      if (def.kind === 'api-key') return { detail: `key ${data.key_id} was created at the provider` };
      await asRotator((c) => c.query(`ALTER ROLE ${c.escapeIdentifier(data.username!)} LOGIN PASSWORD ${c.escapeLiteral(data.password!)}`));
      return { detail: `${data.username} can log in with the pending password` };
    },

    /** Step 3: the pending version works on the target. A failure is a typed, non-retryable answer: the run rolls back. */
    async testPendingSecret({ secret, version }: VersionRef): Promise<{ detail: string }> {
      const def = secretOf(secret);
      const check = await testVersion(def, await readVersion(deps.vault, secret, version));
      if (!check.ok) throw ApplicationFailure.nonRetryable(`the target refused the pending version: ${check.detail}`, 'RotationTestFailed');
      return { detail: check.detail };
    },

    /**
     * Undo of steps 1–2: the pending version is revoked on the target and destroyed in Vault;
     * `current` stays. A version that is current or previous by now (a finish that took effect
     * although the run did not see it: a lost attempt, an abort) is never touched.
     */
    async rollbackPendingSecret({ secret, version }: VersionRef): Promise<{ detail: string; kept?: true }> {
      const def = secretOf(secret);
      const meta = await readMeta(deps.vault, secret);
      if (meta.labels.current === version || meta.labels.previous === version) {
        return { detail: `version ${version} is ${meta.labels.current === version ? 'current' : 'previous'} already: nothing rolled back`, kept: true };
      }
      const data = await readVersion<Record<string, string>>(deps.vault, secret, version).catch(() => undefined);
      if (data && def.kind === 'api-key') {
        const current = await readVersion<ApiKeyData>(deps.vault, secret, meta.labels.current ?? String(meta.latest));
        await provider(def, current.value, 'DELETE', `/v1/api_keys/${data.key_id}`);
      } else if (data) {
        await asRotator((c) => c.query(`ALTER ROLE ${c.escapeIdentifier(data.username!)} NOLOGIN PASSWORD NULL`));
      }
      await deps.vault.write(`secret/destroy/${secret}`, { versions: [Number(version)] });
      await writeLabels(deps.vault, secret, { ...meta.labels, pending: undefined });
      rotations?.inc({ secret, outcome: 'rolled_back' });
      await event('secret.rotation_rolled_back', { path: secret, version: Number(version) });
      return { detail: `version ${version} revoked and destroyed; version ${meta.labels.current} stays current` };
    },

    /**
     * Step 4: pending becomes current, the old current becomes previous (still valid until
     * revoked). Idempotent: a retry after an attempt that wrote the labels answers the same.
     */
    async finishRotation({ secret, version }: VersionRef): Promise<{ current: string; previous?: string }> {
      const meta = await readMeta(deps.vault, secret);
      if (meta.labels.current === version && !meta.labels.pending) return { current: version, previous: meta.labels.previous };
      if (meta.labels.pending !== version) throw ApplicationFailure.nonRetryable(`version ${version} is not pending any more`, 'RotationConflict');
      await writeLabels(deps.vault, secret, { current: version, previous: meta.labels.current });
      rotations?.inc({ secret, outcome: 'rotated' });
      return { current: version, previous: meta.labels.current };
    },

    /** Consumers are told (NATS `secrets.rotated`, Kafka `api.config-changes`): versions only, never a value. */
    async notifySecretRotated({ secret, version, previous }: VersionRef & { previous?: string }): Promise<void> {
      const msg: SecretRotated = { path: secret, version: Number(version), previous: previous ? Number(previous) : undefined, at: new Date().toISOString() };
      deps.nats?.publish(SECRET_ROTATED_SUBJECT, JSON.stringify(msg));
      await deps.nats?.flush();
      await event('secret.rotated', { ...msg });
    },

    /** After the grace period: the previous version stops working on its target. */
    async revokePreviousSecret({ secret, version }: VersionRef): Promise<{ detail: string }> {
      const def = secretOf(secret);
      const meta = await readMeta(deps.vault, secret);
      const previous = await readVersion<Record<string, string>>(deps.vault, secret, version);
      if (def.kind === 'api-key') {
        const current = await readVersion<ApiKeyData>(deps.vault, secret, meta.labels.current!);
        // A version written by hand may lack its key id: the provider says which key it is.
        const probe = await provider(def, previous.value!, 'GET', '/v1/account');
        if (probe.status === 401) return { detail: 'the previous key no longer works; nothing to revoke' };
        const keyId = previous.key_id ?? String(probe.body?.api_key_id ?? '');
        const r = await provider(def, current.value, 'DELETE', `/v1/api_keys/${encodeURIComponent(keyId)}`);
        const after = await provider(def, previous.value!, 'GET', '/v1/account');
        if (after.status !== 401) throw ApplicationFailure.retryable(`the provider did not revoke the previous key (${r.status}, then ${after.status})`, 'TargetRefused');
        await event('secret.previous_revoked', { path: secret, version: Number(version) });
        return { detail: `key ${keyId} revoked at the provider` };
      }
      const user = previous.username!;
      if (meta.labels.current && (await readVersion<DbLogin>(deps.vault, secret, meta.labels.current)).username === user) {
        return { detail: `${user} is the current login again; nothing to revoke` };
      }
      // Another rotation (a scheduled one beside an operator's, whose run ids differ) may be
      // making this login current again, between its test and its finish.
      if (meta.labels.pending && (await readVersion<DbLogin>(deps.vault, secret, meta.labels.pending)).username === user) {
        return { detail: `${user} is the pending login of another rotation; nothing to revoke` };
      }
      const ended = await asRotator(async (c) => {
        await c.query(`ALTER ROLE ${c.escapeIdentifier(user)} NOLOGIN PASSWORD NULL`);
        // Sessions opened with the old login end once they have been idle for a second: a pool
        // runs a checked-out connection's query within milliseconds, so such a session sits in
        // a pool's idle list and the pool simply opens another. Busy ones get time to finish.
        let n = 0;
        const deadline = Date.now() + 30_000;
        for (;;) {
          n += (await c.query(
            `SELECT count(*)::int AS n FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity
              WHERE usename = $1 AND state = 'idle' AND state_change < now() - interval '1 second') t`, [user])).rows[0].n as number;
          const left = (await c.query('SELECT count(*)::int AS n FROM pg_stat_activity WHERE usename = $1', [user])).rows[0].n as number;
          if (!left) break;
          if (Date.now() > deadline) {
            n += (await c.query('SELECT count(*)::int AS n FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = $1) t', [user])).rows[0].n as number;
            deps.logger.warn({ user, sessions: left }, 'old login still busy after 30 s; its sessions were ended');
            break;
          }
          Context.current().heartbeat();
          await new Promise((r) => setTimeout(r, 250));
        }
        return n;
      });
      await event('secret.previous_revoked', { path: secret, version: Number(version) });
      return { detail: `${user} can no longer log in; ${ended} old session(s) ended` };
    },

    /** A rotation that did not complete: a metric, an error log and an event for the operator. */
    async raiseRotationAlert({ secret, reason }: SecretRef & { reason: string }): Promise<void> {
      rotations?.inc({ secret, outcome: 'failed' });
      deps.logger.error({ secret, reason }, 'secret rotation failed');
      await event('secret.rotation_failed', { path: secret, reason });
    },
  };
}
