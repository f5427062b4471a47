import type { FastifyInstance } from 'fastify';
import { z } from 'zod';
import { ApiError, validationError } from '../lib/errors';
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
    const client = await deps.pool.connect();
    try {
      await client.query('BEGIN');
      const row = (await client.query(
        `INSERT INTO workflow_triggers (workspace_id, route_methods, route_path, event_type, workflow_type, input_template, callback_url, upstream_url, enabled)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) RETURNING *`,
        [q.data.workspace, r.route_methods ?? (r.route_path ? ['POST'] : null), r.route_path ?? null, r.event_type ?? null, r.workflow_type,
          r.input_template === undefined ? null : JSON.stringify(r.input_template), r.callback_url ?? null, r.upstream_url ?? null, r.enabled],
      )).rows[0];
      await client.query(
        `INSERT INTO audit_logs (workspace_id, actor, action, entity_type, entity_id, before, after, correlation_id) VALUES ($1, $2, 'create', 'workflow_trigger', $3, NULL, $4, $5)`,
        [q.data.workspace, `token:${who.name}`, row.id, JSON.stringify(row), req.id],
      );
      await client.query('COMMIT');
      announce();
      return reply.code(201).send(row);
    } catch (err) {
      await client.query('ROLLBACK');
      throw err;
    } finally {
      client.release();
    }
  });

  app.delete('/triggers/:id', async (req, reply) => {
    const who = await authenticateAdmin(deps.pool, req, 'admin');
    const { id } = req.params as { id: string };
    if (!/^[0-9a-f-]{36}$/.test(id)) throw new ApiError(404, 'not_found', 'trigger not found');
    const existing = (await deps.pool.query('SELECT * FROM workflow_triggers WHERE id = $1', [id])).rows[0];
    if (!existing || (who.workspace !== null && who.workspace !== existing.workspace_id)) throw new ApiError(404, 'not_found', 'trigger not found');
    await deps.pool.query('DELETE FROM workflow_triggers WHERE id = $1', [id]);
    await deps.pool.query(
      `INSERT INTO audit_logs (workspace_id, actor, action, entity_type, entity_id, before, after, correlation_id) VALUES ($1, $2, 'delete', 'workflow_trigger', $3, $4, NULL, $5)`,
      [existing.workspace_id, `token:${who.name}`, id, JSON.stringify(existing), req.id],
    );
    announce();
    return reply.code(204).send();
  });
}
