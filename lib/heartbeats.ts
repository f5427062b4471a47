import { hostname } from 'node:os';
import type { NatsConnection } from 'nats';
import type { Config } from './config';
import { subjects } from './nats';

/** What a process says about itself on `health.heartbeats` and when asked on `gateway.instances`. */
export type Heartbeat = {
  process: Config['process'];
  instance: string;
  group?: string;
  status_url: string;
  /** Gateways: where clients reach this instance. */
  public_url?: string;
  at: string;
  /** `stopping`: the last beat of a graceful shutdown (the monitor drops the instance without an alarm). */
  status?: 'up' | 'stopping';
  /** Gateways: the config version served per workspace. */
  config?: Record<string, number>;
};

export const GATEWAY_INSTANCES_SUBJECT = 'gateway.instances';
/** `{instance, action: 'stop'}`: the named gateway answers, then shuts down gracefully (the instance-loss runbook). */
export const GATEWAY_CONTROL_SUBJECT = 'gateway.control';
export type GatewayControl = { instance: string; action: 'stop' };

/**
 * Publishes a heartbeat every FLOWGATE_HEARTBEAT_MS (every process does; lib/heartbeat-monitor.ts
 * watches them) and, in gateways, answers `gateway.instances` requests at once (a rollout finds
 * the gateways and the versions they serve without waiting for a beat). The returned stop sends
 * a last beat saying the instance is stopping.
 */
export function startHeartbeats(nc: NatsConnection, config: Config, extra: () => Partial<Heartbeat> = () => ({}), onStop?: () => void): () => void {
  const instance = `${config.process}@${hostname()}:${process.pid}`;
  const beat = (): Heartbeat => ({
    process: config.process, instance, status_url: `http://${config.FLOWGATE_HOST === '0.0.0.0' ? hostname() : config.FLOWGATE_HOST}:${config.statusPort}`,
    at: new Date().toISOString(), status: 'up', ...extra(),
  });
  const publish = () => { try { nc.publish(subjects.heartbeats, JSON.stringify(beat())); } catch { /* reconnecting: the next beat goes */ } };
  publish();
  const timer = setInterval(publish, config.FLOWGATE_HEARTBEAT_MS);
  timer.unref();
  const sub = config.process === 'gateway' ? nc.subscribe(GATEWAY_INSTANCES_SUBJECT, { callback: (_e, m) => m.respond(JSON.stringify(beat())) }) : undefined;
  const control = onStop ? nc.subscribe(GATEWAY_CONTROL_SUBJECT, {
    callback: (_e, m) => {
      const c = m.json<GatewayControl>();
      if (c.instance !== instance || c.action !== 'stop') return;
      m.respond(JSON.stringify({ instance, stopping: true }));
      onStop();
    },
  }) : undefined;
  return () => {
    clearInterval(timer);
    try { nc.publish(subjects.heartbeats, JSON.stringify({ ...beat(), status: 'stopping' })); } catch { /* closed already: the monitor reports it silent */ }
    sub?.unsubscribe();
    control?.unsubscribe();
  };
}

/** Every gateway instance that answers within `waitMs`. */
export async function findGateways(nc: NatsConnection, waitMs = 750): Promise<Heartbeat[]> {
  const out: Heartbeat[] = [];
  const replies = await nc.requestMany(GATEWAY_INSTANCES_SUBJECT, '', { maxWait: waitMs });
  for await (const m of replies) out.push(m.json<Heartbeat>());
  return out;
}
