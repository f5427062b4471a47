import type { PluginDoc, PolicyDoc } from '../lib/control-plane/schemas';
import type { pluginConfigSchemas, PluginName } from '../lib/control-plane/plugins';
import type { Snapshot } from '../lib/control-plane/versions';
import type { z } from 'zod';
import type { LimitPolicy } from './rate-limit';

/**
 * What the request pipeline needs of one workspace's config version, worked out once when the
 * version is installed rather than per request: the plugins in force for a route and consumer,
 * the rate-limit policies, the consumers by name and the workspace's JWT settings.
 */

export type PluginConfig<N extends PluginName> = z.infer<(typeof pluginConfigSchemas)[N]>;
export type PluginSet = { [N in PluginName]?: PluginConfig<N> };

type Scoped = PluginDoc & { id: string };
type Policy = PolicyDoc & { id: string };

/**
 * Kong's precedence, most specific first: consumer+route, consumer+service, the consumer alone,
 * the route, the service, then the workspace-wide one. A consumer's own plugin (bob's IP
 * allow-list) is not overridden by a route's or a service's of the same name.
 */
function rank(p: Scoped): number {
  const c = p.consumer !== undefined;
  const r = p.route !== undefined;
  const s = p.service !== undefined;
  if (c && r) return 0;
  if (c && s) return 1;
  if (c) return 2;
  if (r) return 3;
  if (s) return 4;
  return 5;
}

export type RouteRef = { name: string; service?: string };

export class WorkspaceView {
  private readonly plugins: Scoped[];
  private readonly resolved = new Map<string, PluginSet>();
  readonly consumers: Map<string, { id: string; roles: string[] }>;
  private readonly workspacePolicies: LimitPolicy[];
  private readonly routePolicies = new Map<string, LimitPolicy[]>();
  private readonly consumerPolicies = new Map<string, LimitPolicy[]>();

  constructor(snapshot: Snapshot) {
    this.plugins = (snapshot.plugins as Scoped[]).filter((p) => p.enabled).sort((a, b) => rank(a) - rank(b));
    this.consumers = new Map((snapshot.consumers as { id: string; username: string; roles?: string[] }[]).map((c) => [c.username, { id: c.id, roles: c.roles ?? [] }]));
    const policies = (snapshot.policies as Policy[]).filter((p) => p.enabled);
    const limit = (p: Policy): LimitPolicy => ({ name: p.name, limit: p.limit, windowSeconds: p.window_seconds, algorithm: p.algorithm });
    this.workspacePolicies = policies.filter((p) => p.scope === 'workspace').map(limit);
    for (const p of policies) {
      const into = p.scope === 'route' ? [this.routePolicies, p.route!] as const : p.scope === 'consumer' ? [this.consumerPolicies, p.consumer!] as const : undefined;
      if (into) into[0].set(into[1], [...(into[0].get(into[1]) ?? []), limit(p)]);
    }
  }

  /** The workspace-wide JWT settings (the jwt plugin applies to the whole workspace). */
  get jwt(): PluginConfig<'jwt'> | undefined {
    return this.plugins.find((p) => p.name === 'jwt' && rank(p) === 5)?.config as PluginConfig<'jwt'> | undefined;
  }

  /** The plugins in force for a request: per name, the most specific one that applies. */
  pluginsFor(route: RouteRef | undefined, consumer: string | undefined): PluginSet {
    const key = `${route?.name ?? ''}\0${consumer ?? ''}`;
    let set = this.resolved.get(key);
    if (set) return set;
    set = {};
    for (const p of this.plugins) {
      if (set[p.name]) continue;
      if (p.consumer !== undefined && p.consumer !== consumer) continue;
      if (p.route !== undefined && p.route !== route?.name) continue;
      if (p.service !== undefined && p.service !== route?.service) continue;
      (set as Record<string, unknown>)[p.name] = p.config;
    }
    // Bounded by the routes × consumers that really call; a new config version starts afresh.
    if (this.resolved.size < 50_000) this.resolved.set(key, set);
    return set;
  }

  /**
   * The rate limits one request counts against, each with its counter key. A workspace policy
   * is the tenant's whole quota; a route policy counts per consumer on that route (Kong's
   * `limit_by: consumer`); a consumer policy counts that consumer across every route.
   */
  limitsFor(tenant: string, route: string | undefined, consumer: string): { key: string; policy: LimitPolicy }[] {
    const out = this.workspacePolicies.map((policy) => ({ key: `${tenant}:ws:${policy.name}`, policy }));
    if (route) for (const policy of this.routePolicies.get(route) ?? []) out.push({ key: `${tenant}:route:${route}:${consumer}:${policy.name}`, policy });
    for (const policy of this.consumerPolicies.get(consumer) ?? []) out.push({ key: `${tenant}:consumer:${consumer}:${policy.name}`, policy });
    return out;
  }
}
