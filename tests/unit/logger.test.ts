// The request logger Fastify gets per request: made only when a line is written.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import pino from 'pino';
import { LazyChildLogger } from '../../lib/logger';

test('LazyChildLogger: no child for lines below the level; a written line carries the bindings, redacted like the parent', () => {
  const lines: Record<string, unknown>[] = [];
  const parent = pino({ level: 'warn', redact: { paths: ['authorization'], censor: '[redacted]' } }, { write: (l: string) => { lines.push(JSON.parse(l) as Record<string, unknown>); } });
  let made = 0;
  const child = parent.child.bind(parent);
  parent.child = ((...args: Parameters<typeof parent.child>) => { made += 1; return child(...args); }) as typeof parent.child;
  const log = new LazyChildLogger(parent, { correlation_id: 'req-1' }, {});
  log.info('below the level');
  log.debug({ a: 1 }, 'below too');
  assert.equal(made, 0, 'no child made for dropped lines');
  assert.equal(log.level, 'warn');
  log.warn({ authorization: 'Bearer secret' }, 'upstream unavailable');
  log.error('second');
  assert.equal(made, 1, 'one child, made once');
  assert.deepEqual(lines.map((l) => [l.msg, l.correlation_id]), [['upstream unavailable', 'req-1'], ['second', 'req-1']]);
  assert.equal(lines[0]!.authorization, '[redacted]');
});
