import { secretRef } from '../lib/control-plane/plugins';
import { ApiError } from '../lib/errors';
import type { Logger } from '../lib/logger';
import { vaultPaths, type VaultClient } from '../lib/vault';

/**
 * Credentials a route sends upstream, kept in OpenBao instead of the config: a request header
 * edit whose whole value is `{vault:NAME#FIELD}` (a route's `transformations.request.add_headers`,
 * `request-transformer`'s `add_headers`) is sent as FIELD of the workspace's secret NAME, at
 * `secret/data/upstreams/{workspace}/{NAME}` (Kong's vault references, confined to the
 * workspace). The config, its versions, exports, audit rows and Kafka records hold the reference
 * only.
 *
 * A secret is read when a request first needs it and kept for `ttlMs`; after that the kept value
 * is still used while a fresh read is under way (a rotation reaches the gateway within `ttlMs`
 * plus one read), and kept while OpenBao is away. One that was never read, or is not there:
 * `503 credential_unavailable`.
 */

/** A secret's fields as last read (none yet: `data` undefined), whether OpenBao said it is not there, and until when that holds. */
type Entry = { data?: Record<string, unknown>; missing: boolean; until: number; reading?: Promise<void> };

const unavailable = (ref: string, why: string) => new ApiError(503, 'credential_unavailable', `the route's credential ${ref} is unavailable: ${why}`);

export class SecretRefs {
  private readonly entries = new Map<string, Entry>();

  constructor(private readonly opts: { vault?: VaultClient; logger: Logger; ttlMs: number; maxEntries?: number }) {}

  /**
   * Replaces the references among the configured `added` header values (as they stand in
   * `headers`, lower-case names) with the secrets' fields: synchronous when each is known and
   * fresh, else a promise. Only configured values: a client sending a reference in a header of
   * its own must not have the gateway fill in the workspace's secret.
   */
  resolveHeaders(workspace: string, headers: Record<string, string>, added: (Record<string, string> | undefined)[]): void | Promise<void> {
    let pending: Promise<void>[] | undefined;
    let failed: { err: unknown } | undefined;
    for (const edits of added) {
      for (const configured in edits) {
        const value = edits[configured]!;
        const ref = secretRef(value);
        const name = configured.toLowerCase();
        if (!ref || headers[name] !== value) continue;
        let got: string | Promise<string>;
        try {
          got = this.value(workspace, ref, value);
        } catch (err) {
          // Thrown once every read already under way has a handler: one left pending would
          // reject unhandled, and an unhandled rejection ends the process.
          failed ??= { err };
          continue;
        }
        if (typeof got === 'string') headers[name] = got;
        else (pending ??= []).push(got.then((v) => { headers[name] = v; }));
      }
    }
    if (pending) return Promise.all(pending).then(() => { if (failed) throw failed.err; });
    if (failed) throw failed.err;
  }

  private value(workspace: string, ref: { name: string; field: string }, text: string): string | Promise<string> {
    const key = `${workspace}\0${ref.name}`;
    const entry = this.entries.get(key);
    const pick = (e: Entry): string => {
      const v = e.data?.[ref.field];
      if (typeof v === 'string') return v;
      throw unavailable(text, e.data ? `no field ${ref.field}` : e.missing ? 'not in OpenBao' : 'OpenBao could not be read');
    };
    if (entry && Date.now() < entry.until) return pick(entry);
    const e = entry ?? this.remember(key);
    const reading = this.read(workspace, ref.name, e);
    // A kept value serves while the fresh read is under way (or failing).
    if (e.data) return pick(e);
    return reading.then(() => pick(e));
  }

  private remember(key: string): Entry {
    if (this.entries.size >= (this.opts.maxEntries ?? 10_000)) this.entries.delete(this.entries.keys().next().value!);
    const e: Entry = { missing: false, until: 0 };
    this.entries.set(key, e);
    return e;
  }

  private read(workspace: string, name: string, e: Entry): Promise<void> {
    e.reading ??= (async () => {
      try {
        if (!this.opts.vault) throw new Error('the gateway has no OpenBao client');
        const res = await this.opts.vault.read(vaultPaths.upstreamSecret(workspace, name)) as { data?: { data?: Record<string, unknown> } };
        e.data = res.data?.data ?? {};
        e.missing = false;
        e.until = Date.now() + this.opts.ttlMs;
      } catch (err) {
        if ((err as { response?: { statusCode?: number } }).response?.statusCode === 404) {
          e.data = undefined;
          e.missing = true;
          e.until = Date.now() + this.opts.ttlMs;
        } else {
          // Kept as it was (a value known before stays in use); the next request tries again.
          this.opts.logger.warn({ err, tenant: workspace, secret: name }, 'route credential could not be read from OpenBao');
        }
      } finally {
        e.reading = undefined;
      }
    })();
    return e.reading;
  }
}
