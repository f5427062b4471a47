// validationError: every 400 names the offending field, unknown keys included.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { z } from 'zod';
import { validationError } from '../../lib/errors';

test('an unknown key is named as the field it is, at its depth; other issues keep their paths', () => {
  const schema = z.object({ name: z.string(), options: z.object({ level: z.number() }).strict() }).strict();
  const r = schema.safeParse({ name: 1, nmae: 'x', options: { level: 1, lvl: 2 } });
  assert.ok(!r.success);
  const err = validationError(r.error, 'body');
  assert.equal(err.statusCode, 400);
  assert.deepEqual((err.details as { field: string }[]).map((d) => d.field).sort(), ['body.name', 'body.nmae', 'body.options.lvl']);
  assert.match(err.message, /body\.nmae/);
});
