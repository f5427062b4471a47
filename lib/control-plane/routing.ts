/**
 * When do two routes collide? When a request could match both with neither more specific:
 * a shared method, the same path pattern (parameter names aside: `/a/:id` is `/a/:x`) and
 * overlapping hosts (no hosts means any host). The Admin API refuses such a route and names
 * the one it collides with, instead of letting the gateway pick one silently.
 */

export type RouteClaim = { owner: string; methods: readonly string[]; paths: readonly string[]; hosts: readonly string[] };
export type RouteConflict = { owner: string; method: string; path: string };

/** `/orders/:id/` and `/orders/:order` are the same pattern. */
export function normalisePattern(path: string): string {
  const trimmed = path.length > 1 ? path.replace(/\/+$/, '') : path;
  return trimmed.replace(/:[A-Za-z0-9_]+/g, ':');
}

function hostsOverlap(a: readonly string[], b: readonly string[]): boolean {
  if (a.length === 0 || b.length === 0) return a.length === b.length;
  const lower = new Set(a.map((h) => h.toLowerCase()));
  return b.some((h) => lower.has(h.toLowerCase()));
}

export function findRouteConflict(claim: RouteClaim, existing: readonly RouteClaim[]): RouteConflict | undefined {
  const mine = new Map(claim.paths.map((p) => [normalisePattern(p), p]));
  for (const other of existing) {
    if (!hostsOverlap(claim.hosts, other.hosts)) continue;
    const method = claim.methods.find((m) => other.methods.includes(m));
    if (!method) continue;
    for (const p of other.paths) {
      const path = mine.get(normalisePattern(p));
      if (path !== undefined) return { owner: other.owner, method, path };
    }
  }
  return undefined;
}
