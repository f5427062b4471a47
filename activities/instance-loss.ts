import { ApplicationFailure, Context } from '@temporalio/activity';
import type { NatsConnection } from 'nats';
import { findGateways, GATEWAY_CONTROL_SUBJECT, type GatewayControl, type Heartbeat } from '../lib/heartbeats';
import { whileBeating } from './heartbeating';

export type GatewayRef = { instance: string; public_url: string; group?: string };
export type ProbeResult = { instance: string; ok: number; failed: number; p99_ms: number };
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

const refOf = (h: Heartbeat): GatewayRef | undefined => (h.public_url ? { instance: h.instance, public_url: h.public_url, group: h.group } : undefined);

/** Data-plane instance loss: find the gateways, probe them, stop one, see it gone, probe the others. */
export function instanceLossActivities(deps: { nats?: NatsConnection }) {
  const nats = () => {
    if (!deps.nats) throw ApplicationFailure.nonRetryable('this worker has no NATS connection', 'NoNats');
    return deps.nats;
  };
  return {
    /** The instance to stop (named, or the first of the group) and the ones that must keep serving. */
    async gatewayInventory(p: { instance?: string; group?: string }): Promise<{ target: GatewayRef; survivors: GatewayRef[] }> {
      const all = (await findGateways(nats(), 1000)).map(refOf).filter((g): g is GatewayRef => !!g).sort((a, b) => a.instance.localeCompare(b.instance));
      // Named and in a group: the instance must be in that group, whose members are the survivors.
      const target = all.find((g) => (!p.instance || g.instance === p.instance) && (!p.group || g.group === p.group));
      const which = [p.instance, p.group && `in group ${p.group}`].filter(Boolean).join(' ') || 'at all';
      if (!target) throw ApplicationFailure.nonRetryable(`no gateway instance ${which} answers on gateway.instances`, 'NoSuchInstance');
      // The survivors are the rest of the target's group, named or not: each group serves its own
      // config version (a canary), so another group's instances do not stand in for it.
      const group = p.group ?? target.group;
      const survivors = all.filter((g) => g.instance !== target.instance && g.group === group);
      if (!survivors.length) throw ApplicationFailure.nonRetryable(`stopping ${target.instance} would leave no instance${group ? ` in group ${group}` : ''} serving`, 'NoSurvivors');
      return { target, survivors };
    },

    /** `requests` requests to each instance's public /health, one after another: how many were served, and the p99. */
    async probeGateways(p: { gateways: GatewayRef[]; requests: number }): Promise<ProbeResult[]> {
      return whileBeating(async () => {
        const out: ProbeResult[] = [];
        for (const g of p.gateways) {
          const times: number[] = [];
          let ok = 0;
          let failed = 0;
          let inARow = 0;
          for (let i = 0; i < p.requests; i++) {
            // An instance that failed five in a row is failing: the rest count as failed, not waited for
            // 2 s each (a hung survivor must end as SurvivorsFailed, not as a timed-out activity).
            if (inARow >= 5) {
              failed += p.requests - i;
              break;
            }
            const t0 = performance.now();
            try {
              const res = await fetch(`${g.public_url}/health`, { signal: AbortSignal.timeout(2000) });
              await res.arrayBuffer();
              if (res.ok) {
                ok++;
                inARow = 0;
              } else {
                failed++;
                inARow++;
              }
            } catch {
              failed++;
              inARow++;
            }
            times.push(performance.now() - t0);
          }
          times.sort((a, b) => a - b);
          out.push({ instance: g.instance, ok, failed, p99_ms: Math.round((times[Math.min(times.length - 1, Math.ceil(times.length * 0.99) - 1)] ?? 0) * 100) / 100 });
        }
        return out;
      });
    },

    /** Asks the instance to shut down (gracefully, as on SIGTERM); idempotent once it is gone. */
    async stopGateway(p: { target: GatewayRef }): Promise<{ requested: boolean; at: string }> {
      const at = new Date().toISOString();
      try {
        await nats().request(GATEWAY_CONTROL_SUBJECT, JSON.stringify({ instance: p.target.instance, action: 'stop' } satisfies GatewayControl), { timeout: 2000 });
        return { requested: true, at };
      } catch {
        // No answer: already gone (a retry after the first stop), or it never was.
        const still = (await findGateways(nats(), 750)).some((h) => h.instance === p.target.instance);
        if (still) throw new Error(`${p.target.instance} did not answer the stop request`);
        return { requested: false, at };
      }
    },

    /** Waits until the instance neither answers gateway.instances nor accepts connections. */
    async awaitGatewayGone(p: { target: GatewayRef; timeout_ms: number }): Promise<{ gone_ms: number }> {
      const t0 = Date.now();
      while (Date.now() - t0 < p.timeout_ms) {
        Context.current().heartbeat();
        const listed = (await findGateways(nats(), 500)).some((h) => h.instance === p.target.instance);
        const answers = await fetch(`${p.target.public_url}/health`, { signal: AbortSignal.timeout(500) }).then(() => true, () => false);
        if (!listed && !answers) return { gone_ms: Date.now() - t0 };
        await sleep(100);
      }
      throw ApplicationFailure.nonRetryable(`${p.target.instance} still serves after ${p.timeout_ms} ms`, 'InstanceStillServing');
    },
  };
}
