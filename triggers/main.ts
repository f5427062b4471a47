import { context, SpanKind, trace } from '@opentelemetry/api';
import { headers as natsHeaders, type JsMsg } from 'nats';
import { PoisonMessageError, startJetStreamWorker } from '../lib/jetstream-worker';
import { prom } from '../lib/metrics';
import { connectNats, ensureStreams, natsHealthy, STREAMS, subjects } from '../lib/nats';
import { createAppPool } from '../lib/db-credentials';
import { inWorkspace, postgresHealthy } from '../lib/postgres';
import { writeAudit } from '../lib/audit';
import { runProcess } from '../lib/process-runtime';
import { endSpan, extractContext, natsHeaderGetter, startSpan } from '../lib/tracing';
import { connectTemporal, temporalHealthy } from '../lib/temporal';
import { signalMessageSchema, triggerMessageSchema } from '../lib/trigger-message';
import { PoisonTriggerError, startFromTrigger } from './starter';
import { startEventRules } from './event-rules';
import { ExecutionIds } from '../lib/execution-ids';
import { createKafka, registerConsumerLag, TOPICS } from '../lib/kafka';
import { startHeartbeats } from '../lib/heartbeats';
import { deliverSignal } from './signals';

const decode = <T>(schema: { safeParse: (v: unknown) => { success: boolean; data?: T; error?: unknown } }, m: JsMsg): T => {
  let raw: unknown;
  try {
    raw = m.json();
  } catch {
    throw new PoisonMessageError('message is not JSON');
  }
  const r = schema.safeParse(raw);
  if (!r.success) throw new PoisonMessageError(`message does not match its schema: ${String(r.error)}`);
  return r.data as T;
};

void runProcess('triggers', async ({ config, logger, registry, tracing }) => {
  const nc = await connectNats(config.FLOWGATE_NATS_URL, 'flowgate-triggers');
  const pool = await createAppPool(config, 5, { nats: nc, logger });
  await ensureStreams(nc);
  const temporal = await connectTemporal(config.FLOWGATE_TEMPORAL_ADDRESS, config.FLOWGATE_TEMPORAL_NAMESPACE, { traced: true });
  const js = nc.jetstream();
  const jsm = await nc.jetstreamManager();

  const started = new prom.Counter({ name: 'workflow_trigger_starts_total', help: 'Triggers consumed, by outcome', labelNames: ['tenant', 'workflow', 'outcome'], registers: [registry] });
  const lag = new prom.Histogram({ name: 'workflow_trigger_to_start_lag_seconds', help: 'Time from the gateway accepting a trigger to Temporal starting it', buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60], registers: [registry] });
  const startRpc = new prom.Histogram({ name: 'workflow_start_rpc_duration_seconds', help: "Temporal's answer time to the consumer's start call", buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5], registers: [registry] });
  const pickup = new prom.Histogram({ name: 'workflow_trigger_pickup_delay_seconds', help: "Flowgate's share of the lag: from the gateway's accept to the consumer's start call", buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1, 5], registers: [registry] });
  const redeliveries = new prom.Counter({ name: 'workflow_consumer_redeliveries_total', help: 'Messages delivered more than once', labelNames: ['stream'], registers: [registry] });
  const deadLetters = new prom.Counter({ name: 'workflow_consumer_dead_letters_total', help: 'Messages dead-lettered', labelNames: ['stream', 'tenant'], registers: [registry] });

  /** Dead letter: the stream (for inspection and replay), a row the status API reads, an audit row. */
  const deadLetter = (kind: 'triggers' | 'signals') => async (m: JsMsg, reason: string) => {
    let parsed: { execution_id?: string; tenant?: string; workflow_type?: string } = {};
    try { parsed = m.json(); } catch { /* unparseable: keep the raw bytes only */ }
    const tenant = parsed.tenant ?? m.subject.split('.').at(-1) ?? 'unknown';
    const h = natsHeaders();
    h.set('Flowgate-Dead-Letter-Reason', reason.slice(0, 1000));
    h.set('Flowgate-Original-Subject', m.subject);
    await js.publish(subjects.deadLetter(kind, tenant), m.data, { headers: h, msgID: `dl:${m.info.stream}:${m.seq}` });
    await inWorkspace(pool, tenant, async (db) => {
      if (parsed.execution_id) {
        await db.query(
          `INSERT INTO dead_letters (execution_id, workspace_id, kind, workflow_type, reason, deliveries) VALUES ($1, $2, $3, $4, $5, $6)
           ON CONFLICT (execution_id) DO NOTHING`,
          [kind === 'triggers' ? parsed.execution_id : `${parsed.execution_id}:signal:${m.seq}`, tenant, kind === 'triggers' ? 'trigger' : 'signal', parsed.workflow_type ?? null, reason, m.info.deliveryCount],
        );
      }
      await writeAudit(db, {
        workspace: tenant, actor: 'trigger-consumer', action: `${kind}.dead_lettered`, entityType: 'execution', entityId: parsed.execution_id,
        after: { reason, deliveries: m.info.deliveryCount }, correlationId: m.headers?.get('X-Request-ID') || null,
      });
    });
    deadLetters.inc({ stream: m.info.stream, tenant });
    logger.error({ execution_id: parsed.execution_id, tenant, reason }, `${kind} message dead-lettered`);
  };

  const triggers = await startJetStreamWorker({
    js, jsm, logger,
    stream: STREAMS.triggers,
    durable: 'flowgate-trigger-starters',
    ackWaitMs: config.FLOWGATE_CONSUMER_ACK_WAIT_MS,
    concurrency: config.FLOWGATE_CONSUMER_CONCURRENCY,
    maxDeliver: config.FLOWGATE_CONSUMER_MAX_DELIVER,
    onRedelivery: () => redeliveries.inc({ stream: STREAMS.triggers }),
    deadLetter: deadLetter('triggers'),
    handle: async (m) => {
      const msg = decode(triggerMessageSchema, m);
      let outcome;
      if (m.info.deliveryCount === 1) pickup.observe(Math.max(0, Date.now() - Date.parse(msg.accepted_at)) / 1000);
      // The gateway's span is the parent; Temporal's interceptor carries this one into the workflow.
      const span = startSpan(tracing.tracer, `trigger ${msg.workflow_type}`, SpanKind.CONSUMER, extractContext(m.headers, natsHeaderGetter), {
        'messaging.system': 'nats', 'messaging.destination.name': m.subject, 'flowgate.execution_id': msg.execution_id, 'flowgate.tenant': msg.tenant, 'flowgate.delivery': m.info.deliveryCount,
      });
      const traceId = span.spanContext().traceId;
      const endRpc = startRpc.startTimer();
      try {
        outcome = await context.with(trace.setSpan(context.active(), span), () => startFromTrigger(temporal, config.FLOWGATE_TASK_QUEUE, msg));
        endRpc();
        endSpan(span);
      } catch (err) {
        endSpan(span, err);
        if (err instanceof PoisonTriggerError) throw new PoisonMessageError(err.message);
        throw err;
      }
      if (config.FLOWGATE_FAILPOINT === 'exit-after-start') {
        // Synchronous write: pino's async stream would not flush before SIGKILL.
        process.stderr.write(`failpoint exit-after-start: dying before the ack of ${msg.execution_id}\n`);
        process.kill(process.pid, 'SIGKILL');
      }
      started.inc({ tenant: msg.tenant, workflow: msg.workflow_type, outcome });
      if (outcome === 'started') lag.observe((Date.now() - Date.parse(msg.accepted_at)) / 1000);
      logger.debug({ execution_id: msg.execution_id, correlation_id: msg.correlation_id, trace_id: traceId, outcome }, 'trigger consumed');
    },
  });

  const signals = await startJetStreamWorker({
    js, jsm, logger,
    stream: STREAMS.signals,
    durable: 'flowgate-signal-deliverers',
    ackWaitMs: config.FLOWGATE_CONSUMER_ACK_WAIT_MS,
    concurrency: config.FLOWGATE_CONSUMER_CONCURRENCY,
    maxDeliver: config.FLOWGATE_CONSUMER_MAX_DELIVER,
    onRedelivery: () => redeliveries.inc({ stream: STREAMS.signals }),
    deadLetter: deadLetter('signals'),
    handle: async (m) => deliverSignal(temporal, decode(signalMessageSchema, m)),
  });

  const kafka = createKafka(config.FLOWGATE_KAFKA_BROKERS, 'flowgate-triggers');
  const eventTriggers = new prom.Counter({ name: 'workflow_event_triggers_total', help: 'api.events records turned into triggers', labelNames: ['tenant', 'workflow'], registers: [registry] });
  const events = await startEventRules({
    group: config.FLOWGATE_EVENT_RULES_GROUP, failpoint: config.FLOWGATE_FAILPOINT, nc, kafka, brokers: config.FLOWGATE_KAFKA_BROKERS, pool, js, logger,
    ids: new ExecutionIds(config.FLOWGATE_EXECUTION_ID_SECRET),
    onTrigger: (rule) => eventTriggers.inc({ tenant: rule.workspace_id, workflow: rule.workflow_type }),
  });

  const lagGauge = registerConsumerLag(kafka, registry, config.FLOWGATE_EVENT_RULES_GROUP, TOPICS.events);
  const stopBeats = startHeartbeats(nc, config);
  return {
    checks: [
      { name: 'nats', check: () => natsHealthy(nc) },
      { name: 'temporal', check: () => temporalHealthy(temporal) },
      { name: 'postgres', check: () => postgresHealthy(pool) },
      { name: 'events-consumer', check: async () => events.consuming() },
    ],
    // Stop pulling and finish in-flight messages (each acked or nak'ed), then close the clients.
    shutdown: [
      ['consumers', () => Promise.all([triggers.stop(), signals.stop(), events.close(), lagGauge.close()])],
      ['nats', async () => { stopBeats(); await nc.drain(); }],
      ['postgres', () => pool.end()],
      ['temporal', () => temporal.connection.close()],
    ],
  };
});
