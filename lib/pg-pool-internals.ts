import type pg from 'pg';

type PoolInternals = { _clients?: pg.PoolClient[]; _idle?: { client: pg.PoolClient }[]; _expired?: WeakSet<object>; _remove?: (c: pg.PoolClient) => void };

/**
 * Retires the pool's connections that `keep` refuses: idle ones close now, busy ones when they
 * are released — what pg-pool does itself when a connection outlives maxLifetimeSeconds (its
 * `_expired` set). Used when the login rotates or the primary moves: without it, a pool under
 * steady traffic keeps reusing old connections until their lifetime ends. If pg-pool's internals
 * ever change, this does nothing and the max lifetime (5 minutes) retires them instead.
 */
export function retireConnections(pool: pg.Pool, keep: (c: pg.PoolClient) => boolean): void {
  const p = pool as unknown as PoolInternals;
  if (!Array.isArray(p._clients) || !Array.isArray(p._idle) || !(p._expired instanceof WeakSet) || typeof p._remove !== 'function') return;
  const idle = new Set(p._idle.map((i) => i.client));
  for (const c of [...p._clients]) {
    if (keep(c)) continue;
    if (idle.has(c)) p._remove.call(pool, c);
    else p._expired.add(c);
  }
}

/**
 * The pool's connection options as fields (host, port, database, user, password), so they can be
 * changed for new connections: a connection string, while set, wins over the fields.
 */
export function poolOptions(pool: pg.Pool): pg.PoolConfig {
  const options = (pool as unknown as { options: pg.PoolConfig }).options;
  if (options.connectionString) {
    const u = new URL(options.connectionString);
    Object.assign(options, { host: u.hostname, port: Number(u.port || 5432), database: decodeURIComponent(u.pathname.slice(1)), user: decodeURIComponent(u.username) });
    Object.defineProperty(options, 'password', { configurable: true, enumerable: false, writable: true, value: decodeURIComponent(u.password) });
    delete options.connectionString;
  }
  return options;
}
