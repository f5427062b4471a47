import type { FastifyInstance } from 'fastify';
import { z } from 'zod';
import { writeAudit } from '../lib/audit';
import { ApiError, validationError } from '../lib/errors';
import { withTransaction } from '../lib/postgres';
import { subjects } from '../lib/nats';
import { triggerRuleInput } from '../lib/trigger-rules';
import { findWorkflowType } from '../lib/workflow-registry';
import type { AdminDeps } from './app';
import { authenticateAdmin, type AdminPrincipal } from './auth';

const workspaceQuery = z.object({ workspace: z.string().min(1) }).strict();

function scope(who: AdminPrincipal, workspace: string): void {
  // A workspace-bound token sees only its workspace: another one is "not found", not "forbidden".
  if (who.workspace !== null && who.workspace !== workspace) throw new ApiError(404, 'not_found', 'workspace not found');
}

/** Trigger rules: which route or event type starts which workflow (workflow_triggers). */
export function registerTriggerRoutes(app: FastifyInstance, deps: AdminDeps): void {
  const announce = () => deps.nc.publish(subjects.configInvalidations, JSON.stringify({ entity: 'workflow_triggers', at: new Date().toISOString() }));

  app.get('/triggers', async (req) => {
    const who = await authenticateAdmin(deps.pool, req, 'viewer');
    const q = workspaceQuery.safeParse(req.query);
    if (!q.success) throw validationError(q.error, 'query');
    scope(who, q.data.workspace);
    const res = await deps.pool.query('SELECT * FROM workflow_triggers WHERE workspace_id = $1 ORDER BY created_at', [q.data.workspace]);
    return { data: res.rows };
  });

  app.post('/triggers', async (req, reply) => {
    const who = await authenticateAdmin(deps.pool, req, 'admin');
    const q = workspaceQuery.safeParse(req.query);
    if (!q.success) throw validationError(q.error, 'query');
    scope(who, q.data.workspace);
    const body = triggerRuleInput.safeParse(req.body);
    if (!body.success) throw validationError(body.error, 'body');
    const r = body.data;
    if (!findWorkflowType(r.workflow_type)) throw new ApiError(409, 'unknown_reference', `no workflow type named ${r.workflow_type}`, [{ field: 'body.workflow_type', message: 'see GET /api/workflow-types on the gateway' }]);
    const ws = await deps.pool.query('SELECT 1 FROM workspaces WHERE id = $1', [q.data.workspace]);
    if (!ws.rowCount) throw new ApiError(404, 'not_found', 'workspace not found');
    const row = await withTransaction(deps.pool, async (client) => {
      const created = (await client.query(
        `INSERT INTO workflow_triggers (workspace_id, route_methods, route_path, event_type, workflow_type, input_template, callback_url, upstream_url, enabled)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) RETURNING *`,
        [q.data.workspace, r.route_methods ?? (r.route_path ? ['POST'] : null), r.route_path ?? null, r.event_type ?? null, r.workflow_type,
          r.input_template === undefined ? null : JSON.stringify(r.input_template), r.callback_url ?? null, r.upstream_url ?? null, r.enabled],
      )).rows[0];
      await writeAudit(client, { workspace: q.data.workspace, actor: `token:${who.name}`, action: 'create', entityType: 'workflow_trigger', entityId: created.id, after: created, correlationId: req.id });
      return created;
    });
    announce();
    return reply.code(201).send(row);
  });

  app.delete('/triggers/:id', async (req, reply) => {
    const who = await authenticateAdmin(deps.pool, req, 'admin');
    const { id } = req.params as { id: string };
    if (!/^[0-9a-f-]{36}$/.test(id)) throw new ApiError(404, 'not_found', 'trigger not found');
    const existing = (await deps.pool.query('SELECT * FROM workflow_triggers WHERE id = $1', [id])).rows[0];
    if (!existing || (who.workspace !== null && who.workspace !== existing.workspace_id)) throw new ApiError(404, 'not_found', 'trigger not found');
    await withTransaction(deps.pool, async (client) => {
      await client.query('DELETE FROM workflow_triggers WHERE id = $1', [id]);
      await writeAudit(client, { workspace: existing.workspace_id, actor: `token:${who.name}`, action: 'delete', entityType: 'workflow_trigger', entityId: id, before: existing, correlationId: req.id });
    });
    announce();
    return reply.code(204).send();
  });
}
