import { ApplicationFailure, Context } from '@temporalio/activity';
import type { NatsConnection } from 'nats';
import type { Pool } from 'pg';
import type { Doc } from '../lib/control-plane/entities';
import { findRouteConflict } from '../lib/control-plane/routing';
import type { RouteDoc, ServiceDoc } from '../lib/control-plane/schemas';
import { diffDocuments, type CollectionDiff, type Snapshot } from '../lib/control-plane/versions';
import { findGateways, type Heartbeat } from '../lib/heartbeats';
import { TOPICS } from '../lib/kafka';
import type { KafkaBatcher } from '../lib/kafka-batcher';
import { subjects } from '../lib/nats';
import { asPlatform } from '../lib/postgres';

export type RolloutRef = { workspace: string };
/**
 * A gateway group's traffic over a bake. `p99_over_top_bucket`: more than 1 % of its requests took
 * longer than the histogram's highest finite bucket, and `p99_ms` is that bound, a lower bound.
 */
export type GroupStats = { instances: number; requests: number; errors: number; error_rate: number; p99_ms: number | null; p99_over_top_bucket?: boolean };

/**
 * Sums `http_request_duration_seconds` over the label sets of `tenant` (all of them without
 * one): the count, the 5xx count and the buckets. A canary is judged on the workspace it rolls
 * out; other tenants' traffic on the same instances would dilute its errors and its p99.
 */
export function readHistogram(text: string, tenant?: string): { count: number; errors: number; buckets: Map<number, number> } {
  let count = 0;
  let errors = 0;
  const buckets = new Map<number, number>();
  const label = tenant === undefined ? undefined : `tenant="${tenant}"`;
  for (const line of text.split('\n')) {
    if (label && !line.includes(label)) continue;
    if (line.startsWith('http_request_duration_seconds_count{')) {
      const v = Number(line.slice(line.lastIndexOf(' ') + 1));
      count += v;
      if (/status="5\d\d"/.test(line)) errors += v;
    } else if (line.startsWith('http_request_duration_seconds_bucket{')) {
      const le = /le="([^"]+)"/.exec(line)?.[1];
      const bound = le === '+Inf' ? Infinity : Number(le);
      buckets.set(bound, (buckets.get(bound) ?? 0) + Number(line.slice(line.lastIndexOf(' ') + 1)));
    }
  }
  return { count, errors, buckets };
}

/**
 * p99 from the bucket deltas of a window: the upper bound of the bucket holding the 99th
 * percentile, in ms. In `+Inf` (over the highest finite bound) it is the highest finite bound,
 * flagged `overTop`: a tail slower than the histogram can show is not "no p99".
 */
export function windowP99(before: Map<number, number>, after: Map<number, number>, total: number): { ms: number | null; overTop: boolean } {
  if (total <= 0) return { ms: null, overTop: false };
  const bounds = [...after.keys()].sort((a, b) => a - b);
  for (const b of bounds) {
    if ((after.get(b)! - (before.get(b) ?? 0)) < total * 0.99) continue;
    if (b !== Infinity) return { ms: b * 1000, overTop: false };
    const top = bounds.filter((x) => x !== Infinity).at(-1);
    return { ms: top === undefined ? null : top * 1000, overTop: true };
  }
  return { ms: null, overTop: false };
}

/** The steps of the config-rollout runbook: check, diff, pin versions per gateway group, read real gateway metrics. */
export function rolloutActivities(deps: { pool: Pool; nats?: NatsConnection; events: KafkaBatcher }) {
  const nats = () => {
    if (!deps.nats) throw ApplicationFailure.nonRetryable('the worker has no NATS connection', 'NoNats');
    return deps.nats;
  };
  const snapshot = async (workspace: string, version: number) => asPlatform(deps.pool, async (db) =>
    (await db.query<{ snapshot: Snapshot }>('SELECT snapshot FROM config_versions WHERE workspace_id = $1 AND version = $2', [workspace, version])).rows[0]?.snapshot);

  return {
    /** The versions of the rollout (from: what every group is held on; to: the newest unless given) and the new one's checks. */
    async validateRollout({ workspace, to_version }: RolloutRef & { to_version?: number }): Promise<{ from: number; to: number; routes: number }> {
      const row = await asPlatform(deps.pool, async (db) => (await db.query<{ latest: string; held: string | null }>(
        `SELECT w.config_version AS latest, p.version AS held FROM workspaces w LEFT JOIN config_pins p ON p.workspace_id = w.id AND p.gateway_group = '*' WHERE w.id = $1`, [workspace])).rows[0]);
      if (!row) throw ApplicationFailure.nonRetryable(`no workspace ${workspace}`, 'RolloutInvalid');
      if (row.held === null) throw ApplicationFailure.nonRetryable(`${workspace} is not held on a version (PUT /config/pin first): every gateway serves its newest config already`, 'RolloutInvalid');
      const from = Number(row.held);
      const to = to_version ?? Number(row.latest);
      if (to === from) throw ApplicationFailure.nonRetryable(`every gateway already serves version ${to}`, 'RolloutInvalid');
      const snap = await snapshot(workspace, to);
      if (!snap) throw ApplicationFailure.nonRetryable(`${workspace} has no version ${to}`, 'RolloutInvalid');
      const services = new Map((snap.services as (ServiceDoc & Doc)[]).map((s) => [s.name, s]));
      const routes = snap.routes as (RouteDoc & Doc)[];
      for (const r of routes) {
        // A static route needs no upstream; an aggregate needs each of its backends' services.
        const named = [...(r.service === undefined ? [] : [r.service]), ...(r.aggregate?.backends ?? []).map((b) => b.service)];
        for (const name of named) {
          const svc = services.get(name);
          if (!svc) throw ApplicationFailure.nonRetryable(`route ${r.name} names an unknown upstream ${name}`, 'RolloutInvalid');
          if (!svc.url && !(svc.targets ?? []).length) throw ApplicationFailure.nonRetryable(`service ${svc.name} has no url or target`, 'RolloutInvalid');
        }
      }
      routes.forEach((r, i) => {
        const claim = (x: RouteDoc & Doc) => ({ owner: x.name, methods: x.methods ?? [], paths: x.paths, hosts: x.hosts ?? [] });
        const clash = findRouteConflict(claim(r), routes.slice(i + 1).map(claim));
        if (clash) throw ApplicationFailure.nonRetryable(`routes ${r.name} and ${clash.owner} collide on ${clash.method} ${clash.path}`, 'RolloutInvalid');
      });
      return { from, to, routes: routes.length };
    },

    async diffRollout({ workspace, from, to }: RolloutRef & { from: number; to: number }): Promise<{ changes: number; summary: string }> {
      const [a, b] = await Promise.all([snapshot(workspace, from), snapshot(workspace, to)]);
      const diff = diffDocuments(a as never, b as never);
      const parts = Object.entries(diff).filter(([k]) => k !== 'changes').map(([k, v]) => {
        const d = v as CollectionDiff;
        return `${k}: +${d.created.length} -${d.deleted.length} ~${d.updated.length}`;
      });
      return { changes: diff.changes, summary: `${diff.changes} change(s)${parts.length ? `; ${parts.join(', ')}` : ''}` };
    },

    /** Holds a gateway group ('*' for all) on a version, or lets it go (null); every gateway is told at once. */
    async pinVersion({ workspace, group, version }: RolloutRef & { group: string; version: number | null }): Promise<void> {
      await asPlatform(deps.pool, (db) => version === null
        ? db.query('DELETE FROM config_pins WHERE workspace_id = $1 AND gateway_group = $2', [workspace, group])
        : db.query(`INSERT INTO config_pins (workspace_id, gateway_group, version) VALUES ($1, $2, $3)
                    ON CONFLICT (workspace_id, gateway_group) DO UPDATE SET version = $3, updated_at = now()`, [workspace, group, version]));
      nats().publish(subjects.configInvalidations, JSON.stringify({ workspace, version, group, at: new Date().toISOString() }));
      await deps.events.sendWithin(2000, TOPICS.configChanges, workspace, { type: 'config.pinned', workspace, group, version, at: new Date().toISOString() });
    },

    /** Waits until every instance of `group` (all instances for '*', others for '!group') serves `version`; returns them. */
    async awaitServed({ workspace, group, version, timeout_ms = 30_000 }: RolloutRef & { group: string; version: number; timeout_ms?: number }): Promise<{ instances: string[] }> {
      const deadline = Date.now() + timeout_ms;
      const mine = (h: Heartbeat) => group === '*' || (group.startsWith('!') ? h.group !== group.slice(1) : h.group === group);
      let last: Heartbeat[] = [];
      while (Date.now() < deadline) {
        last = (await findGateways(nats())).filter(mine);
        if (last.length && last.every((h) => h.config?.[workspace] === version)) return { instances: last.map((h) => h.instance) };
        Context.current().heartbeat();
        await Context.current().sleep(250); // rejects when the activity is cancelled (an abort)
      }
      throw ApplicationFailure.retryable(`gateways of ${group} do not all serve ${version}: ${JSON.stringify(last.map((h) => [h.instance, h.config?.[workspace]]))}`, 'RolloutNotServed');
    },

    /** Real traffic of `workspace` on the canary against the rest over `seconds`: requests, 5xx share and p99 from each instance's own metrics. */
    async bakeCanary({ canary_group, seconds, workspace }: { canary_group: string; seconds: number; workspace?: string }): Promise<{ canary: GroupStats; stable: GroupStats }> {
      const gateways = await findGateways(nats());
      const scrape = async () => Promise.all(gateways.map(async (g) => ({ g, h: readHistogram(await (await fetch(`${g.status_url}/metrics`, { signal: AbortSignal.timeout(5000) })).text(), workspace) })));
      const before = await scrape();
      const end = Date.now() + seconds * 1000;
      while (Date.now() < end) {
        Context.current().heartbeat();
        // An abort ends the bake at once (the run then restores the canary), not after up to an hour.
        await Context.current().sleep(Math.min(1000, end - Date.now()));
      }
      const after = await scrape();
      const stats = (inCanary: boolean): GroupStats => {
        const pairs = after.filter((a) => (a.g.group === canary_group) === inCanary).map((a) => ({ a, b: before.find((b) => b.g.instance === a.g.instance)! }));
        const requests = pairs.reduce((n, { a, b }) => n + a.h.count - b.h.count, 0);
        const errors = pairs.reduce((n, { a, b }) => n + a.h.errors - b.h.errors, 0);
        const sum = (side: 'a' | 'b') => {
          const m = new Map<number, number>();
          for (const p of pairs) for (const [k, v] of p[side].h.buckets) m.set(k, (m.get(k) ?? 0) + v);
          return m;
        };
        const p = windowP99(sum('b'), sum('a'), requests);
        return { instances: pairs.length, requests, errors, error_rate: requests ? errors / requests : 0, p99_ms: p.ms, ...(p.overTop ? { p99_over_top_bucket: true } : {}) };
      };
      return { canary: stats(true), stable: stats(false) };
    },
  };
}
