import assert from 'node:assert/strict';
import { test } from 'node:test';
import { ExecutionIds } from '../../lib/execution-ids';

const ids = new ExecutionIds('a-test-secret-of-enough-length');

test('a fresh id belongs to its tenant only', () => {
  const id = ids.mint('acme');
  assert.match(id, /^fgx_[A-Za-z0-9_-]{22}_[A-Za-z0-9_-]{16}$/);
  assert.equal(ids.belongsTo(id, 'acme'), true);
  assert.equal(ids.belongsTo(id, 'globex'), false);
  assert.notEqual(ids.mint('acme'), id);
});

test('the same tenant and Idempotency-Key always give the same id; other tenants another', () => {
  assert.equal(ids.mint('acme', 'order-42'), ids.mint('acme', 'order-42'));
  assert.notEqual(ids.mint('acme', 'order-42'), ids.mint('acme', 'order-43'));
  assert.notEqual(ids.mint('acme', 'order-42'), ids.mint('globex', 'order-42'));
});

test("with a request's fingerprint, the same key names one id per request", () => {
  assert.equal(ids.mint('acme', 'order-42', 'f1'), ids.mint('acme', 'order-42', 'f1'));
  assert.notEqual(ids.mint('acme', 'order-42', 'f1'), ids.mint('acme', 'order-42', 'f2'));
  assert.notEqual(ids.mint('acme', 'order-42', 'f1'), ids.mint('acme', 'order-42'));
  assert.equal(ids.belongsTo(ids.mint('acme', 'order-42', 'f1'), 'acme'), true);
});

test('made-up, altered or foreign-secret ids are refused', () => {
  const id = ids.mint('acme');
  assert.equal(ids.belongsTo(id.slice(0, -1) + (id.endsWith('A') ? 'B' : 'A'), 'acme'), false);
  assert.equal(ids.belongsTo('fgx_notanid', 'acme'), false);
  assert.equal(ids.belongsTo(new ExecutionIds('another-secret-value-xx').mint('acme'), 'acme'), false);
});

test('a list cursor opens to its page token for its tenant only; anything else opens to nothing', () => {
  const token = Buffer.from([0, 1, 2, 250, 251, 252, 42]);
  const cursor = ids.sealCursor('acme', token);
  assert.deepEqual(ids.openCursor('acme', cursor), token);
  assert.equal(ids.openCursor('globex', cursor), undefined);
  assert.equal(ids.openCursor('acme', `${cursor}x`), undefined);
  assert.equal(ids.openCursor('acme', `AAAA${cursor}`), undefined);
  assert.equal(ids.openCursor('acme', Buffer.from(token).toString('base64url')), undefined, "Temporal's bare token");
  assert.equal(new ExecutionIds('another-secret-of-enough-length').openCursor('acme', cursor), undefined);
});
