// One api.events record must never stall its partition: a correlation id that cannot be a NATS
// header (CR/LF, hundreds of KB) is replaced by the execution id, and a trigger JetStream can never
// take is logged and skipped; a failure that may pass (NATS away, a timeout) still throws, so
// kafkajs reads the record again.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { ErrorCode, headers as natsHeaders, NatsError, type JetStreamClient, type PubAck } from 'nats';
import type { Logger } from '../../lib/logger';
import type { TriggerMessage } from '../../lib/trigger-message';
import { publishTrigger, triggerCorrelation } from '../../triggers/event-rules';

const EXECUTION_ID = 'ex_abc123_mac';

test('a well-formed correlation id is kept; none, an empty one, CR/LF or control characters, or a huge one become the execution id', () => {
  assert.equal(triggerCorrelation('req-1.a:b_C', EXECUTION_ID), 'req-1.a:b_C');
  assert.equal(triggerCorrelation(undefined, EXECUTION_ID), EXECUTION_ID);
  assert.equal(triggerCorrelation('', EXECUTION_ID), EXECUTION_ID);
  for (const bad of ['a\r\nX-Injected: 1', 'a\nb', 'tab\there', 'nul\u0000', 'x'.repeat(129), 'x'.repeat(500_000), 'has space', 'é']) {
    assert.equal(triggerCorrelation(bad, EXECUTION_ID), EXECUTION_ID, JSON.stringify(bad.slice(0, 20)));
  }
  assert.equal(triggerCorrelation('x'.repeat(128), EXECUTION_ID), 'x'.repeat(128), "the gateway's bound for X-Request-ID");
});

test('whatever the event says, the correlation id is a value nats.js takes as a header', () => {
  assert.throws(() => natsHeaders().set('X-Request-ID', 'a\r\nb'), (err: unknown) => (err as NatsError).code === ErrorCode.BadHeader, 'the stall this prevents');
  for (const given of ['a\r\nb', '\u0007', 'x'.repeat(300_000), 'ok-id']) {
    assert.doesNotThrow(() => natsHeaders().set('X-Request-ID', triggerCorrelation(given, EXECUTION_ID)));
  }
});

const msg: TriggerMessage = {
  execution_id: EXECUTION_ID, tenant: 'acme', workflow_type: 'noop', input: {}, correlation_id: 'req-1',
  accepted_at: '2024-01-01T00:00:00.000Z', source: 'event',
};
const record = { topic: 'api.events', partition: 2, offset: '41', rule: 'rule-1' };

/** A logger that keeps what was logged at warn and error. */
function capturingLogger() {
  const lines: { level: string; obj: Record<string, unknown>; msg: string }[] = [];
  const at = (level: string) => (obj: Record<string, unknown>, m: string) => { lines.push({ level, obj, msg: m }); };
  return { logger: { warn: at('warn'), error: at('error'), info: at('info'), debug: at('debug') } as unknown as Logger, lines };
}
function fakeJs(publish: (subject: string, data: string, opts: { msgID?: string; headers?: { get(k: string): string } }) => Promise<PubAck>) {
  return { publish } as unknown as Pick<JetStreamClient, 'publish'>;
}
const ack = { stream: 'FLOWGATE_TRIGGERS', seq: 1, duplicate: false, domain: '' } as PubAck;

test('published: on the tenant subject, with Nats-Msg-Id = execution id and X-Request-ID = correlation id', async () => {
  const seen: { subject: string; msgID?: string; requestId?: string; body: unknown }[] = [];
  const js = fakeJs(async (subject, data, opts) => {
    seen.push({ subject, msgID: opts.msgID, requestId: opts.headers?.get('X-Request-ID'), body: JSON.parse(data) });
    return ack;
  });
  const { logger } = capturingLogger();
  assert.equal(await publishTrigger(js, msg, logger, record), true);
  assert.deepEqual(seen, [{ subject: 'workflow.triggers.acme', msgID: EXECUTION_ID, requestId: 'req-1', body: msg }]);
});

test('a trigger that can never be published (over max_payload, over the stream max_msg_size, a bad header) is logged and skipped', async () => {
  const tooBigForStream = new NatsError('message size exceeds maximum allowed', '400');
  tooBigForStream.api_error = { code: 400, err_code: 10054, description: 'message size exceeds maximum allowed' };
  for (const err of [NatsError.errorForCode(ErrorCode.MaxPayloadExceeded), tooBigForStream, new NatsError('invalid header value', ErrorCode.BadHeader)]) {
    const { logger, lines } = capturingLogger();
    assert.equal(await publishTrigger(fakeJs(async () => { throw err; }), msg, logger, record), false, err.message);
    assert.equal(lines.length, 1);
    assert.equal(lines[0]!.level, 'error');
    assert.equal(lines[0]!.obj.offset, '41');
    assert.equal(lines[0]!.obj.execution_id, EXECUTION_ID);
  }
});

test('a failure that may pass (NATS away, a timeout, no stream, a full stream, anything else) throws: kafkajs reads the record again', async () => {
  const full = new NatsError('maximum bytes exceeded', '503');
  for (const err of [NatsError.errorForCode(ErrorCode.Timeout), NatsError.errorForCode(ErrorCode.NoResponders), NatsError.errorForCode(ErrorCode.ConnectionClosed), full, new Error('boom')]) {
    const { logger } = capturingLogger();
    await assert.rejects(publishTrigger(fakeJs(async () => { throw err; }), msg, logger, record), (e: unknown) => e === err);
  }
});
