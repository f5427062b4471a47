import { KafkaJSNonRetriableError, type Consumer, type EachMessageHandler, type Kafka } from 'kafkajs';
import type { JetStreamClient, NatsConnection } from 'nats';
import { ErrorCode, headers as natsHeaders, NatsError } from 'nats';
import type { Pool } from 'pg';
import { z } from 'zod';
import type { ExecutionIds } from '../lib/execution-ids';
import { pinUncommittedPartitions, TOPICS } from '../lib/kafka';
import type { Logger } from '../lib/logger';
import { subjects } from '../lib/nats';
import type { TriggerMessage } from '../lib/trigger-message';
import { loadTriggerRules, renderInput, type TriggerRule } from '../lib/trigger-rules';
import { findWorkflowType } from '../lib/workflow-registry';
import { isCallerRequestId } from '../lib/request-id';

/** An event on Kafka `api.events` (keyed by tenant). */
export const apiEventSchema = z.object({
  id: z.string().min(1).optional(),
  type: z.string().min(1),
  tenant: z.string().min(1),
  data: z.unknown(),
  correlation_id: z.string().optional(),
});

const RULE_CACHE_MS = 30_000;
/** The events consumer's Kafka session timeout (see the consumer below). */
const EVENT_RULES_SESSION_MS = 10_000;
/** A fetch waits this long for a record when there is none: a record is read at once either way; shutdown waits for the fetch under way (kafkajs's 5 s made every stop take 5 s). */
const EVENT_FETCH_WAIT_MS = 1000;

/**
 * Event-type trigger rules: each `api.events` record that matches a rule of its tenant becomes
 * a trigger on JetStream. The execution id derives from the rule and the event (its id, or
 * topic/partition/offset), so a re-read record never starts a second workflow. The offset is
 * committed only after JetStream acked every trigger of the record (or a trigger was skipped as
 * one it can never take: publishTrigger).
 */
/** The default consumer group that turns `api.events` into triggers (FLOWGATE_EVENT_RULES_GROUP; its lag is a metric and a KEDA scaler's input). */
export const EVENT_RULES_GROUP = 'flowgate-event-triggers';

export async function startEventRules(deps: { group?: string; failpoint?: string; nc?: NatsConnection; kafka: Kafka; brokers: string[]; pool: Pool; js: JetStreamClient; ids: ExecutionIds; logger: Logger; onTrigger: (rule: TriggerRule) => void }): Promise<{ consuming: () => boolean; close: () => Promise<void> }> {
  let cache: { at: number; rules: TriggerRule[] } | undefined;
  // A config change (config.invalidations, which the admin sends for rule changes too) drops the
  // cache at once: a rule is matched from the next event on, not up to RULE_CACHE_MS later. A load
  // that started before the change is not kept.
  let generation = 0;
  deps.nc?.subscribe(subjects.configInvalidations, { callback: () => { generation += 1; cache = undefined; } });
  const rules = async () => {
    if (!cache || Date.now() - cache.at > RULE_CACHE_MS) {
      const gen = generation;
      const loaded = { at: Date.now(), rules: (await loadTriggerRules(deps.pool)).filter((r) => r.event_type) };
      if (gen !== generation) return loaded.rules;
      cache = loaded;
    }
    return cache.rules;
  };
  const groupId = deps.group ?? EVENT_RULES_GROUP;
  // The consumer starts at the end of a partition it has no offset for; pinning those partitions
  // first means a record that lands while no member runs is read when one comes back.
  try {
    const { pinned, groupRunning } = await pinUncommittedPartitions(deps.kafka, deps.brokers, groupId, TOPICS.events);
    if (pinned.length) deps.logger.info({ group: groupId, partitions: pinned }, 'api.events partitions without an offset pinned at their end');
    else if (groupRunning) deps.logger.debug({ group: groupId }, 'api.events group already has members; its offsets are theirs');
  } catch (err) {
    deps.logger.warn({ err, group: groupId }, 'could not pin api.events partitions without an offset; a record landing there while no member runs may be skipped');
  }
  // A member that vanished without leaving (a crash, or a broker restart that made the consumer
  // start over with a new member id) holds its partitions until its session times out: every
  // join meanwhile waits for it. 10 s instead of kafkajs's 30 s bounds that stall.
  const consumer = deps.kafka.consumer({ groupId, allowAutoTopicCreation: false, sessionTimeout: EVENT_RULES_SESSION_MS, heartbeatInterval: 3000, maxWaitTimeInMs: EVENT_FETCH_WAIT_MS });
  consumer.on(consumer.events.GROUP_JOIN, (e) => deps.logger.info({ partitions: e.payload.memberAssignment[TOPICS.events], ms: e.payload.duration }, 'api.events consumer joined its group'));
  const start = async () => {
    await consumer.connect();
    await consumer.subscribe({ topic: TOPICS.events, fromBeginning: false });
    await consumer.run({ autoCommit: true, eachMessage });
  };
  const keeper = keepConsuming(consumer, start, deps.logger);
  let failpointHit = false;
  const eachMessage: EachMessageHandler = async ({ topic, partition, message }) => {
    if (deps.failpoint === 'events-consumer-crash' && !failpointHit) {
      // Tests: an error kafkajs does not restart the consumer after, on the first record.
      failpointHit = true;
      throw new KafkaJSNonRetriableError('failpoint events-consumer-crash');
    }
    let event: z.infer<typeof apiEventSchema>;
    try {
      event = apiEventSchema.parse(JSON.parse(message.value?.toString() ?? ''));
    } catch (err) {
      deps.logger.warn({ err, topic, partition, offset: message.offset }, 'api.events record is not a valid event; skipped');
      return;
    }
    const matching = (await rules()).filter((r) => r.workspace_id === event.tenant && r.event_type === event.type);
    for (const rule of matching) {
      const def = findWorkflowType(rule.workflow_type);
      if (!def) continue;
      let input: unknown;
      try {
        input = renderInput(rule.input_template, { event });
      } catch (err) {
        // A value the template cannot put into text (400 at the gateway): this event never fits.
        deps.logger.warn({ rule: rule.id, event: event.id, err: (err as Error).message }, 'event does not fit the rule\'s input template; skipped');
        continue;
      }
      const parsed = def.input.safeParse(input);
      if (!parsed.success) {
        deps.logger.warn({ rule: rule.id, event: event.id, issues: parsed.error.issues }, 'event does not fit the workflow input; skipped');
        continue;
      }
      const eventKey = event.id ?? `${topic}:${partition}:${message.offset}`;
      const executionId = deps.ids.mint(event.tenant, `event:${rule.id}:${eventKey}`);
      const msg: TriggerMessage = {
        execution_id: executionId, tenant: event.tenant, workflow_type: def.name, input: parsed.data,
        correlation_id: triggerCorrelation(event.correlation_id, executionId), accepted_at: new Date().toISOString(), source: 'event',
        ...(rule.callback_url ? { callback_url: rule.callback_url } : {}),
      };
      if (await publishTrigger(deps.js, msg, deps.logger, { topic, partition, offset: message.offset, rule: rule.id })) deps.onTrigger(rule);
    }
  };
  await start();
  return { consuming: keeper.consuming, close: async () => { keeper.close(); await consumer.disconnect(); } };
}

/**
 * The trigger's correlation id: the event's when the gateway would take it as an X-Request-ID, the
 * execution id otherwise (none, empty, CR/LF that nats.js refuses in a header, or hundreds of KB
 * that push the message past NATS's max_payload: each would fail every attempt to publish).
 */
export function triggerCorrelation(given: string | undefined, executionId: string): string {
  return given !== undefined && isCallerRequestId(given) ? given : executionId;
}

/** JetStream's "message size exceeds maximum allowed" (the stream's max_msg_size). */
const JS_MESSAGE_TOO_BIG = 10054;
/** nats.js errors raised before anything is sent, about the message itself. */
const UNPUBLISHABLE_CODES = new Set<string>([ErrorCode.MaxPayloadExceeded, ErrorCode.BadHeader, ErrorCode.BadPayload, ErrorCode.BadSubject]);

/**
 * Publishes an event rule's trigger; false when it was skipped. A message JetStream can never take
 * (too big, a header nats.js refuses) is logged and skipped: thrown, kafkajs would retry the record
 * for ever without committing it, and every later record of its partition would wait behind it.
 * Any other failure (NATS away, a timeout, no stream yet, a full stream) throws, so kafkajs retries
 * the record and does not commit its offset.
 */
export async function publishTrigger(js: Pick<JetStreamClient, 'publish'>, msg: TriggerMessage, logger: Logger,
  record: { topic: string; partition: number; offset: string; rule: string }): Promise<boolean> {
  try {
    const h = natsHeaders();
    h.set('X-Request-ID', msg.correlation_id);
    await js.publish(subjects.trigger(msg.tenant), JSON.stringify(msg), { msgID: msg.execution_id, headers: h, timeout: 5000 });
    return true;
  } catch (err) {
    const never = err instanceof NatsError && (UNPUBLISHABLE_CODES.has(err.code) || err.api_error?.err_code === JS_MESSAGE_TOO_BIG);
    if (!never) throw err;
    logger.error({ err, ...record, tenant: msg.tenant, execution_id: msg.execution_id }, 'event trigger can never be published; skipped');
    return false;
  }
}

/**
 * Logs each crash of the consumer and, when kafkajs will not restart it, starts it again (after
 * 1 s, doubling to 30 s while starting fails). kafkajs gives up on errors it calls non-retriable,
 * and some of them pass: a broker that has just restarted answers "group coordinator not found"
 * until its offsets topic is loaded, and the consumer would stay stopped for good. Readiness says
 * not consuming meanwhile.
 */
export function keepConsuming(consumer: Pick<Consumer, 'on' | 'events'>, start: () => Promise<void>, logger: Logger, delays = { firstMs: 1000, maxMs: 30_000 }): { consuming(): boolean; close(): void } {
  let consuming = true;
  let closed = false;
  let timer: NodeJS.Timeout | undefined;
  const again = (delay: number) => {
    if (closed) return;
    timer = setTimeout(() => {
      start().then(() => {
        consuming = true;
        logger.info('api.events consumer started again');
      }, (err: unknown) => {
        logger.warn({ err, retry_in_ms: Math.min(delay * 2, delays.maxMs) }, 'api.events consumer did not start again; retrying');
        again(Math.min(delay * 2, delays.maxMs));
      });
    }, delay);
  };
  consumer.on(consumer.events.CRASH, (e) => {
    logger[e.payload.restart ? 'warn' : 'error']({ err: e.payload.error, restart: e.payload.restart }, 'api.events consumer crashed');
    if (e.payload.restart) return;
    consuming = false;
    again(delays.firstMs);
  });
  return { consuming: () => consuming, close: () => { closed = true; clearTimeout(timer); } };
}
