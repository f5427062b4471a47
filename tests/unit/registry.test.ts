import assert from 'node:assert/strict';
import { test } from 'node:test';
import { describeWorkflowTypes, findWorkflowType, publicTypeName } from '../../lib/workflow-registry';
import * as workflows from '../../workflows';

test('every registered type names an exported workflow function', () => {
  for (const t of describeWorkflowTypes()) {
    const def = findWorkflowType(t.name)!;
    assert.equal(typeof (workflows as Record<string, unknown>)[def.workflow], 'function', `${t.name} → ${def.workflow}`);
    assert.equal(publicTypeName(def.workflow), t.name);
  }
});

test('the registry is published as JSON Schema generated from the zod schemas', () => {
  const hello = describeWorkflowTypes().find((t) => t.name === 'hello')!;
  assert.equal(hello.input_schema.type, 'object');
  assert.deepEqual(hello.input_schema.required, ['name']);
  const approval = describeWorkflowTypes().find((t) => t.name === 'approval-request')!;
  assert.deepEqual(Object.keys(approval.signals).sort(), ['approve', 'reject']);
  assert.ok(findWorkflowType('hello')!.input.safeParse({ name: 'x' }).success);
  assert.equal(findWorkflowType('hello')!.input.safeParse({ name: 'x', extra: 1 }).success, false);
});
