import { BlockList, isIPv4 } from 'node:net';
import type { PluginConfig } from './workspace-view';

/**
 * Stage 5 of the request pipeline: the route's `authorization` plugin. Rules are read in
 * order and the first that matches decides (allow or deny); a rule matches when every
 * condition it states holds. Conditions: roles (RBAC; the built-in roles nest, so a rule
 * for `developer` also admits operators and admins), claims of a JWT, method, path prefix,
 * source address and the time of day or week in UTC (ABAC).
 */

export type AuthorizationConfig = PluginConfig<'authorization'>;
export type AccessRequest = { roles: string[]; claims?: Record<string, unknown>; method: string; path: string; ip: string; now: Date };
export type AccessDecision = { allowed: boolean; rule?: number };

const BUILT_IN = ['viewer', 'developer', 'operator', 'admin'];

/** The roles a principal holds, with the built-in ones it holds by nesting. */
export function effectiveRoles(roles: string[]): Set<string> {
  const out = new Set(roles);
  const top = Math.max(...roles.map((r) => BUILT_IN.indexOf(r)));
  for (let i = 0; i <= top; i++) out.add(BUILT_IN[i]!);
  return out;
}

const lists = new WeakMap<string[], BlockList>();
function blockList(cidrs: string[]): BlockList {
  let list = lists.get(cidrs);
  if (!list) {
    list = new BlockList();
    for (const c of cidrs) {
      const [ip, bits] = c.split('/');
      const type = isIPv4(ip!) ? 'ipv4' : 'ipv6';
      if (bits === undefined) list.addAddress(ip!, type);
      else list.addSubnet(ip!, Number(bits), type);
    }
    lists.set(cidrs, list);
  }
  return list;
}

function addressIn(ip: string, cidrs: string[]): boolean {
  const plain = ip.startsWith('::ffff:') ? ip.slice(7) : ip;
  return blockList(cidrs).check(plain, isIPv4(plain) ? 'ipv4' : 'ipv6');
}

/** OAuth's scope claims: one string of space-separated scopes (RFC 8693, RFC 9068). */
const SPACE_SEPARATED = new Set(['scope', 'scp']);

function claimMatches(claims: Record<string, unknown> | undefined, name: string, allowed: string[]): boolean {
  const value = claims?.[name];
  if (Array.isArray(value)) return value.some((v) => allowed.includes(String(v)));
  if (typeof value === 'string' && SPACE_SEPARATED.has(name)) return value.split(/\s+/).some((v) => allowed.includes(v));
  return value !== undefined && allowed.includes(String(value));
}

/**
 * A path as rules compare it: every percent-escape decoded but an encoded slash (`/users/%40me`
 * is `/users/@me`, as the upstream's framework will read it), and no trailing slash (`/admin/`
 * and `/admin` are one rule, as the router serves both).
 */
export function pathForRules(path: string): string {
  let out = path.includes('%')
    ? path.replace(/(?:%[0-9A-Fa-f]{2})+/g, (run) => {
      try {
        return decodeURIComponent(run).replaceAll('/', '%2F');
      } catch {
        return run.toUpperCase(); // not UTF-8: compared as written
      }
    })
    : path;
  if (out.length > 1 && out.endsWith('/')) out = out.slice(0, -1);
  return out;
}

/** A rule's paths as `pathForRules` gives them, worked out once per config object. */
const rulePaths = new WeakMap<string[], string[]>();
function normalizedPaths(paths: string[]): string[] {
  let out = rulePaths.get(paths);
  if (!out) rulePaths.set(paths, (out = paths.map(pathForRules)));
  return out;
}

/** Is `path` (already `pathForRules`) one of the rule's paths or below one? */
const underAny = (path: string, paths: string[]) => normalizedPaths(paths).some((p) => p === '/' || path === p || path.startsWith(`${p}/`));

export function authorize(cfg: AuthorizationConfig, req: AccessRequest): AccessDecision {
  const roles = effectiveRoles(req.roles);
  let path: string | undefined;
  for (const [i, rule] of cfg.rules.entries()) {
    if (rule.roles && !rule.roles.some((r) => roles.has(r))) continue;
    if (rule.methods && !(rule.methods as string[]).includes(req.method)) continue;
    if (rule.paths && !underAny((path ??= pathForRules(req.path)), rule.paths)) continue;
    if (rule.claims && !Object.entries(rule.claims).every(([name, allowed]) => claimMatches(req.claims, name, allowed))) continue;
    if (rule.source_cidrs && !addressIn(req.ip, rule.source_cidrs)) continue;
    if (rule.hours_utc) {
      const h = req.now.getUTCHours();
      const { from, to } = rule.hours_utc;
      const inside = from < to ? h >= from && h < to : h >= from || h < to;
      if (!inside) continue;
    }
    if (rule.weekdays_utc && !rule.weekdays_utc.includes(req.now.getUTCDay() === 0 ? 7 : req.now.getUTCDay())) continue;
    return { allowed: rule.effect === 'allow', rule: i };
  }
  return { allowed: cfg.default === 'allow' };
}

/** The existing `ip-restriction` plugin: deny wins, then an allow list (when given) must hold the address. */
export function ipAllowed(cfg: PluginConfig<'ip-restriction'>, ip: string): boolean {
  if (cfg.deny.length && addressIn(ip, cfg.deny)) return false;
  return cfg.allow.length === 0 || addressIn(ip, cfg.allow);
}
