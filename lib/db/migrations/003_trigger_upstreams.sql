-- A route-bound trigger may also proxy to an upstream; the gateway then adds the workflow
-- headers to the upstream's answer. (Services and routes proper arrive with the Admin API.)
ALTER TABLE workflow_triggers ADD COLUMN upstream_url text;
ALTER TABLE workflow_triggers ADD COLUMN updated_at timestamptz NOT NULL DEFAULT now();
