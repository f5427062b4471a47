import { createHash, timingSafeEqual } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import FindMyWay, { type HTTPVersion, type Instance } from 'find-my-way';
import type { NatsConnection, Subscription } from 'nats';
import type { Pool } from 'pg';
import { prom } from '../lib/metrics';
import type { Registry } from 'prom-client';
import { parseConfigDocuments } from '../lib/control-plane/declarative';
import { keyHash, type Doc } from '../lib/control-plane/entities';
import { COLLECTIONS, keyOf, type ConsumerDoc, type RouteDoc, type ServiceDoc } from '../lib/control-plane/schemas';
import type { Snapshot } from '../lib/control-plane/versions';
import type { Logger } from '../lib/logger';
import { subjects } from '../lib/nats';
import { asPlatform } from '../lib/postgres';
import type { TriggerRule } from '../lib/trigger-rules';
import { hashCredential } from '../lib/credentials';
import { WorkspaceView } from './workspace-view';

/**
 * The data plane's copy of the config: every workspace's current version, pulled from
 * PostgreSQL every FLOWGATE_CONFIG_REFRESH_MS (30 s) and at once when the admin process
 * announces a new version on `config.invalidations`. A failed pull keeps the last good
 * version, so the gateway goes on serving while the control plane or PostgreSQL is down.
 * In DB-less mode the config comes from a declarative YAML file alone.
 */

type Router = Instance<HTTPVersion.V1>;
export type Service = ServiceDoc & { id: string; workspace: string };
export type Route = RouteDoc & { id: string };
export type Match =
  | { kind: 'route'; route: Route; service?: Service; params: Record<string, string | undefined>; pattern: string; services: Map<string, Service> }
  | { kind: 'trigger'; rule: TriggerRule; params: Record<string, string | undefined> };
export type KeyOwner = { tenant: string; consumerId: string; username: string; roles: string[]; keyId: string };
type KeyEntry = KeyOwner & { hash: Buffer };

type Loaded = { version: number; snapshot: Snapshot; router: Router; services: Map<string, Service>; view: WorkspaceView };

export class ConfigStore {
  private workspaces = new Map<string, Loaded>();
  /** Live API keys by their public prefix (`fgk_<prefix>_…`); the hash is compared in constant time. */
  private keys = new Map<string, KeyEntry[]>();
  /** Keys given by hash alone (a hand-written DB-less file): their prefix is unknown. */
  private keysByHash = new Map<string, KeyEntry>();
  private listeners: ((services: Service[]) => void)[] = [];
  private timer?: NodeJS.Timeout;
  private sub?: Subscription;
  private pulling?: Promise<void>;
  private again?: Promise<void>;
  loadedAt?: Date;
  lastError?: string;
  readonly source: 'postgres' | 'file';
  private readonly versionGauge?: prom.Gauge;

  constructor(private readonly opts: { pool?: Pool; nc?: NatsConnection; file?: string; logger: Logger; refreshMs: number; registry?: Registry; group?: string }) {
    this.source = opts.file ? 'file' : 'postgres';
    if (opts.registry) {
      this.versionGauge = new prom.Gauge({ name: 'gateway_config_version', help: 'The config version the gateway serves, per workspace', labelNames: ['workspace'], registers: [opts.registry] });
    }
  }

  /** The first load must succeed: a gateway with no config serves nothing. */
  async start(): Promise<void> {
    if (this.opts.file) {
      await this.loadFile(this.opts.file);
      return;
    }
    await this.pull();
    const again = () => void this.pull().catch(() => undefined);
    this.timer = setInterval(again, this.opts.refreshMs);
    this.timer.unref();
    this.sub = this.opts.nc?.subscribe(subjects.configInvalidations, { callback: () => again() });
  }

  stop(): void {
    clearInterval(this.timer);
    this.sub?.unsubscribe();
  }

  get ready(): boolean {
    return this.loadedAt !== undefined;
  }

  /** What /info reports: the source and the version served per workspace. */
  describe(): { source: string; loaded_at?: string; last_error?: string; workspaces: Record<string, number> } {
    return {
      source: this.source,
      loaded_at: this.loadedAt?.toISOString(),
      last_error: this.lastError,
      workspaces: Object.fromEntries([...this.workspaces].map(([ws, l]) => [ws, l.version])),
    };
  }

  versionOf(workspace: string): number | undefined {
    return this.workspaces.get(workspace)?.version;
  }

  /** The owner of a live API key, found by its prefix and checked by hash in constant time. */
  keyOwner(credential: string): KeyOwner | undefined {
    const hash = hashCredential(credential);
    let found: KeyEntry | undefined;
    for (const c of this.keys.get(keyPrefix(credential)) ?? []) if (timingSafeEqual(c.hash, hash)) found = c;
    return found ?? (this.keysByHash.size ? this.keysByHash.get(hash.toString('hex')) : undefined);
  }

  view(tenant: string): WorkspaceView | undefined {
    return this.workspaces.get(tenant)?.view;
  }

  /** Called with every service of every workspace after each install (the upstream pools follow). */
  onServices(fn: (services: Service[]) => void): void {
    this.listeners.push(fn);
    fn(this.allServices());
  }

  private allServices(): Service[] {
    return [...this.workspaces.values()].flatMap((l) => [...l.services.values()]);
  }

  find(tenant: string, method: string, host: string | undefined, path: string): Match | undefined {
    const ws = this.workspaces.get(tenant);
    if (!ws) return undefined;
    const found = ws.router.find(method as 'GET', path, host ? { host: host.replace(/:\d+$/, '').toLowerCase() } : {});
    if (!found) return undefined;
    const store = found.store as { route?: Route; pattern?: string; rule?: TriggerRule };
    if (store.rule) return { kind: 'trigger', rule: store.rule, params: found.params };
    const route = store.route!;
    return { kind: 'route', route, service: route.service === undefined ? undefined : ws.services.get(route.service), params: found.params, pattern: store.pattern!, services: ws.services };
  }

  /** The version served per workspace (heartbeats and rollouts read it). */
  served(): Record<string, number> {
    return Object.fromEntries([...this.workspaces].map(([ws, l]) => [ws, l.version]));
  }

  /**
   * Pulls the versions that changed. A call made while a pull is under way may have been
   * caused by a version that pull already missed, so it waits for one more pull after it;
   * any number of such calls share that one follow-up pull.
   */
  pull(): Promise<void> {
    if (!this.pulling) {
      this.pulling = this.doPull().finally(() => { this.pulling = undefined; });
      return this.pulling;
    }
    this.again ??= this.pulling.catch(() => undefined).then(() => {
      this.again = undefined;
      return this.pull();
    });
    return this.again;
  }

  private async doPull(): Promise<void> {
    const pool = this.opts.pool!;
    try {
      await asPlatform(pool, async (db) => {
        // This instance's group's pin, else the all-groups pin, else the newest version (config_pins).
        const current = (await db.query<{ id: string; config_version: string }>(
          `SELECT w.id, coalesce(g.version, a.version, w.config_version) AS config_version FROM workspaces w
             LEFT JOIN config_pins g ON g.workspace_id = w.id AND g.gateway_group = $1
             LEFT JOIN config_pins a ON a.workspace_id = w.id AND a.gateway_group = '*'`, [this.opts.group ?? 'stable'])).rows;
        const next = new Map(this.workspaces);
        for (const ws of this.workspaces.keys()) if (!current.some((c) => c.id === ws)) next.delete(ws);
        for (const { id, config_version } of current) {
          const version = Number(config_version);
          if (next.get(id)?.version === version || version === 0) continue;
          const row = (await db.query<{ snapshot: Snapshot }>('SELECT snapshot FROM config_versions WHERE workspace_id = $1 AND version = $2', [id, version])).rows[0];
          if (row) next.set(id, this.compile(row.snapshot, version));
        }
        // Keys are not versioned with the routes: one revoked (or whose consumer was deleted)
        // since the served version was made stops working now, pinned version or not, and a
        // rollback brings back no revoked key.
        const live = await db.query<{ h: string }>("SELECT encode(key_hash, 'hex') AS h FROM api_keys WHERE revoked_at IS NULL");
        this.install(next, new Set(live.rows.map((r) => r.h)));
      });
      this.lastError = undefined;
    } catch (err) {
      this.lastError = (err as Error).message;
      this.opts.logger.warn({ err }, 'config pull failed; serving the last good version');
      if (!this.loadedAt) throw err;
    }
  }

  private async loadFile(file: string): Promise<void> {
    const text = await readFile(file, 'utf8');
    const next = new Map<string, Loaded>();
    for (const doc of parseConfigDocuments(text)) {
      // Ids are made from names: stable across restarts of a DB-less gateway.
      const snapshot = { _format_version: '1', workspace: doc.workspace } as Snapshot;
      for (const c of COLLECTIONS) {
        snapshot[c] = (doc[c] as Doc[]).map((e) => ({ id: `${doc.workspace}/${c}/${keyOf(c, e)}`, ...e }));
      }
      next.set(doc.workspace, this.compile(snapshot, 1));
    }
    this.install(next);
    this.opts.logger.info({ file, checksum: createHash('sha256').update(text).digest('hex').slice(0, 12), workspaces: [...next.keys()] }, 'DB-less: serving the declarative config file');
  }

  /** Serves `next`; with `liveKeys` (hex hashes of the keys not revoked), only those of its keys. */
  private install(next: Map<string, Loaded>, liveKeys?: Set<string>): void {
    const keys = new Map<string, KeyEntry[]>();
    const byHash = new Map<string, KeyEntry>();
    for (const [ws, l] of next) {
      for (const c of l.snapshot.consumers as (ConsumerDoc & { id: string })[]) {
        for (const k of c.keys ?? []) {
          const { hash, prefix } = keyHash(k);
          if (liveKeys && !liveKeys.has(hash.toString('hex'))) continue;
          const entry = { tenant: ws, consumerId: c.id, username: c.username, roles: c.roles ?? [], keyId: prefix, hash };
          if ('sha256' in k && !k.prefix) byHash.set(hash.toString('hex'), entry);
          const bucket = `fgk_${prefix}`;
          keys.set(bucket, [...(keys.get(bucket) ?? []), entry]);
        }
      }
      this.versionGauge?.set({ workspace: ws }, l.version);
    }
    for (const ws of this.workspaces.keys()) if (!next.has(ws)) this.versionGauge?.remove({ workspace: ws });
    this.workspaces = next;
    this.keys = keys;
    this.keysByHash = byHash;
    this.loadedAt = new Date();
    const services = this.allServices();
    for (const fn of this.listeners) fn(services);
  }

  /** One router per workspace: its enabled routes (host-constrained where they name hosts) and route-bound triggers. */
  private compile(snapshot: Snapshot, version: number): Loaded {
    const router = FindMyWay({ ignoreTrailingSlash: true, ignoreDuplicateSlashes: true });
    const services = new Map((snapshot.services as Service[]).map((s) => [s.name, { ...s, workspace: snapshot.workspace }]));
    const add = (method: string, path: string, hosts: string[], store: object) => {
      try {
        if (hosts.length === 0) router.on(method as 'GET', path, () => undefined, store);
        for (const host of hosts) router.on(method as 'GET', path, { constraints: { host: host.toLowerCase() } }, () => undefined, store);
      } catch (err) {
        // The Admin API refuses colliding routes; a hand-written DB-less file may still hold some.
        this.opts.logger.warn({ err, workspace: snapshot.workspace, path }, 'route collides with another; skipped');
      }
    };
    for (const route of snapshot.routes as Route[]) {
      const service = route.service === undefined ? undefined : services.get(route.service);
      if (!route.enabled || (route.service !== undefined && !service?.enabled)) continue;
      // A route path is a prefix, as in Kong: `/orders` also serves `/orders/42`.
      for (const path of route.paths) {
        for (const m of route.methods) {
          add(m, path, route.hosts ?? [], { route, pattern: path });
          if (!path.endsWith('*')) add(m, `${path.replace(/\/$/, '')}/*`, route.hosts ?? [], { route, pattern: path });
        }
      }
    }
    for (const t of snapshot.triggers as (Doc & { id: string })[]) {
      if (!t.enabled || !t.route_path) continue;
      const rule: TriggerRule = {
        id: t.id, workspace_id: snapshot.workspace, route_methods: (t.route_methods as string[]) ?? ['POST'], route_path: t.route_path as string,
        event_type: null, workflow_type: t.workflow_type as string, input_template: t.input_template ?? null,
        callback_url: (t.callback_url as string) ?? null, upstream_url: (t.upstream_url as string) ?? null, enabled: true,
      };
      for (const m of rule.route_methods!) add(m, rule.route_path!, [], { rule });
    }
    return { version, snapshot, router, services, view: new WorkspaceView(snapshot) };
  }
}

/** The bucket a credential's key would be in: `fgk_<8 hex>` (keys made by hand fall in the bucket of their first 8 characters). */
function keyPrefix(credential: string): string {
  return `fgk_${/^fgk_([0-9a-f]{8})_/.exec(credential)?.[1] ?? credential.slice(0, 8)}`;
}
