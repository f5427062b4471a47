// Trigger rules' input templates: what a request becomes as workflow input, and that the
// caller's credentials are never part of it.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { triggerDoc } from '../../lib/control-plane/schemas';
import { ApiError } from '../../lib/errors';
import { credentialReferences, renderInput, templateHeaders } from '../../lib/trigger-rules';

const request = {
  body: { amount: 42, customer: { id: 'c1' } },
  path: { id: 'o-7' },
  query: {},
  headers: templateHeaders({ authorization: 'Bearer fg_live_secret', 'x-api-key': 'fg_live_other', cookie: 's=1', 'Proxy-Authorization': 'Basic eA==', 'x-region': 'eu' }),
  auth: { tenant: 'acme', consumer_id: 'c-1' },
};

test('a whole {{path}} keeps its type; embedded ones are text', () => {
  assert.deepEqual(renderInput({ amount: '{{body.amount}}', order: 'order {{path.id}} in {{headers.x-region}}', who: '{{auth.tenant}}' }, request),
    { amount: 42, order: 'order o-7 in eu', who: 'acme' });
});

test("templates never see the caller's credential headers", () => {
  assert.deepEqual(request.headers, { 'x-region': 'eu' });
  const input = renderInput({ a: '{{headers.authorization}}', b: 'key {{headers.x-api-key}}', c: '{{headers}}' }, request) as Record<string, unknown>;
  assert.equal(input.a, undefined);
  assert.equal(input.b, 'key ');
  assert.deepEqual(input.c, { 'x-region': 'eu' });
  assert.ok(!JSON.stringify(input).includes('secret'));
});

test('the Admin API refuses a template that names a credential header, at its path', () => {
  assert.deepEqual(credentialReferences({ token: '{{ headers.Authorization }}', nested: ['x', { k: 'c={{headers.cookie}}' }], fine: '{{headers.x-region}}' }),
    [['token'], ['nested', '1', 'k']]);
  const r = triggerDoc.safeParse({ route_path: '/orders', workflow_type: 'hello', input_template: { name: '{{headers.x-api-key}}' } });
  assert.equal(r.success, false);
  assert.deepEqual(r.error!.issues.map((i) => i.path.join('.')), ['input_template.name']);
  assert.equal(triggerDoc.safeParse({ route_path: '/orders', workflow_type: 'hello', input_template: { name: '{{headers.x-region}}' } }).success, true);
});

test('inside text only strings, numbers and booleans are interpolated; anything else is a 400 naming the field', () => {
  const hostile = { ...request, body: { team: { toString: 1 }, tags: ['a', 'b'], ok: true, none: null } };
  const refused = (template: unknown, field: string) => assert.throws(() => renderInput(template, hostile), (err: unknown) => {
    assert.ok(err instanceof ApiError, `an ApiError, not ${String(err)}`);
    assert.equal(err.statusCode, 400);
    assert.equal(err.code, 'validation_failed');
    assert.deepEqual((err.details as { field: string }[]).map((d) => d.field), [field]);
    return true;
  });
  refused({ t: 'team {{body.team}}' }, 'body.team');
  refused({ t: 'tags {{ body.tags }}' }, 'body.tags');
  refused(['x {{body.constructor}}'], 'body.constructor');
  assert.deepEqual(renderInput({ t: 'ok={{body.ok}} none={{body.none}} missing={{body.missing}}', team: '{{body.team}}' }, hostile),
    { t: 'ok=true none= missing=', team: { toString: 1 } }, 'a whole placeholder still takes the object as it is');
});
