-- The ids of deleted workspaces, never given out again. Audit rows, api_calls, dead letters and
-- webhook deliveries outlive their workspace (the audit trail is insert-only), and Temporal keeps
-- its executions under the tenant id: a new workspace under an old id would read the old
-- tenant's audit trail and executions as its own.
CREATE TABLE retired_workspaces (
  id         text PRIMARY KEY,
  deleted_at timestamptz NOT NULL DEFAULT now()
);

ALTER TABLE retired_workspaces ENABLE ROW LEVEL SECURITY;
ALTER TABLE retired_workspaces FORCE ROW LEVEL SECURITY;
CREATE POLICY workspace_isolation ON retired_workspaces USING (flowgate_sees(id)) WITH CHECK (flowgate_sees(id));

-- Workspaces deleted before this migration, from their audit rows.
SET LOCAL flowgate.scope = 'platform';
INSERT INTO retired_workspaces (id, deleted_at)
  SELECT workspace_id, max(at) FROM audit_logs
   WHERE entity_type = 'workspace' AND action = 'delete' AND workspace_id IS NOT NULL
     AND workspace_id NOT IN (SELECT id FROM workspaces)
   GROUP BY workspace_id;
