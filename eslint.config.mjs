import js from '@eslint/js';
import tseslint from 'typescript-eslint';
import { builtinModules } from 'node:module';

// Workflow code runs in Temporal's deterministic sandbox: no Node built-ins, no I/O
// clients, no value imports of activities (they are reached through proxyActivities).
const forbiddenInWorkflows = [
  ...builtinModules,
  ...builtinModules.map((m) => `node:${m}`),
  'pg', 'kafkajs', 'nats', 'ioredis', 'node-vault', 'opossum', 'fastify', 'pino',
  'prom-client', '@temporalio/client', '@temporalio/worker', '@temporalio/activity',
];

export default tseslint.config(
  { ignores: ['node_modules/', 'dist/', '.flowgate/', 'coverage/'] },
  js.configs.recommended,
  ...tseslint.configs.recommended,
  {
    rules: {
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_', varsIgnorePattern: '^_' }],
      '@typescript-eslint/consistent-type-imports': 'error',
    },
  },
  {
    files: ['workflows/**/*.ts'],
    rules: {
      'no-restricted-imports': ['error', {
        paths: forbiddenInWorkflows.map((name) => ({ name, message: 'not allowed in deterministic workflow code' })),
        patterns: [{ group: ['**/activities', '**/activities/**', '**/lib/*', '!**/lib/workflow-*'], message: 'workflows reach activities and clients only through proxyActivities and `import type`', allowTypeImports: true }],
      }],
    },
  },
  {
    files: ['**/*.mjs', '**/*.js'],
    languageOptions: { globals: { process: 'readonly', console: 'readonly', require: 'readonly', __dirname: 'readonly', module: 'writable', URL: 'readonly', setTimeout: 'readonly' } },
    rules: { '@typescript-eslint/no-require-imports': 'off' },
  },
);
