// The linter keeps workflow code deterministic: no Node built-ins, no I/O clients, no activity values.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { ESLint } from 'eslint';

const eslint = new ESLint({ cwd: process.cwd() });
const lint = async (code: string, filePath = 'workflows/probe.ts') => {
  const [result] = await eslint.lintText(code, { filePath });
  return result!.messages.filter((m) => m.ruleId === 'no-restricted-imports' || m.ruleId === '@typescript-eslint/no-restricted-imports');
};

test('a Node built-in or a side-effecting package in workflows/ fails lint', async () => {
  for (const mod of ['node:fs', 'crypto', 'pg', 'kafkajs', '@temporalio/client']) {
    const msgs = await lint(`import x from '${mod}';\nexport const y = x;\n`);
    assert.equal(msgs.length, 1, `${mod} should be refused`);
  }
});

test('a value import of activities fails, a type import passes', async () => {
  assert.equal((await lint(`import { createActivities } from '../activities';\nexport const a = createActivities;\n`)).length, 1);
  assert.equal((await lint(`import type { createActivities } from '../activities';\nexport type A = typeof createActivities;\n`)).length, 0);
});

test('the same imports are fine outside workflows/', async () => {
  assert.equal((await lint(`import fs from 'node:fs';\nexport const y = fs;\n`, 'activities/probe.ts')).length, 0);
});
