import { z } from 'zod';
import { writeAudit } from '../lib/audit';
import { inWorkspace } from '../lib/postgres';
import type { AdminDeps } from './app';
import { workspaceParam, type AdminApi } from './endpoint';

const DEFAULTS = { approval_threshold: 100_000, max_amount: 10_000_000, currencies: null };
const amount = z.number().int().min(0).max(Number.MAX_SAFE_INTEGER);
const settingsBody = z
  .object({
    /** Minor units; a payment above it waits for an approval. */
    approval_threshold: amount,
    max_amount: amount.min(1),
    /** ISO 4217 codes the tenant may charge in; null for all. */
    currencies: z.array(z.string().regex(/^[A-Z]{3}$/)).min(1).nullable().default(null),
  })
  .strict()
  .refine((s) => s.approval_threshold <= s.max_amount, { path: ['approval_threshold'], message: 'must not exceed max_amount' });

/** A workspace's payment limits, read by processPayment's validate step. */
export function registerPayments(api: AdminApi, deps: AdminDeps): void {
  const { pool } = deps;
  const scopedQuery = z.object(workspaceParam).strict();
  const read = (ws: string) => inWorkspace(pool, ws, async (db) =>
    (await db.query('SELECT approval_threshold::float8 AS approval_threshold, max_amount::float8 AS max_amount, currencies, updated_at FROM payment_settings WHERE workspace_id = $1', [ws])).rows[0]);
  api.add({
    method: 'GET', url: '/payment-settings', summary: "The workspace's payment limits (defaults until set)", tag: 'payments', resource: 'payments', action: 'read', query: scopedQuery,
    handler: async ({ ws }) => (await read(ws)) ?? { ...DEFAULTS, updated_at: null },
  });
  api.add({
    method: 'PUT', url: '/payment-settings', summary: "Set the workspace's payment limits", tag: 'payments', resource: 'payments', action: 'write', query: scopedQuery, body: settingsBody,
    handler: async ({ ws, who, body, req }) => inWorkspace(pool, ws, async (db) => {
      const before = (await db.query('SELECT approval_threshold::float8 AS approval_threshold, max_amount::float8 AS max_amount, currencies FROM payment_settings WHERE workspace_id = $1 FOR UPDATE', [ws])).rows[0] ?? null;
      const after = (await db.query(
        `INSERT INTO payment_settings (workspace_id, approval_threshold, max_amount, currencies) VALUES ($1, $2, $3, $4)
         ON CONFLICT (workspace_id) DO UPDATE SET approval_threshold = $2, max_amount = $3, currencies = $4, updated_at = now()
         RETURNING approval_threshold::float8 AS approval_threshold, max_amount::float8 AS max_amount, currencies, updated_at`,
        [ws, body.approval_threshold, body.max_amount, body.currencies])).rows[0];
      await writeAudit(db, { workspace: ws, actor: `token:${who.name}`, action: before ? 'update' : 'create', entityType: 'payment_settings', entityId: ws, before, after: body, correlationId: req.id });
      return after;
    }),
  });
}
