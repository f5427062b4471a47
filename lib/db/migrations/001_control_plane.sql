-- Control-plane state (DESIGN.md, "PostgreSQL tables"). Every row belongs to a workspace (tenant).

CREATE TABLE workspaces (
  id          text PRIMARY KEY CHECK (id ~ '^[a-z0-9][a-z0-9-]{1,62}$'),
  name        text NOT NULL,
  created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE rbac_roles (
  workspace_id text NOT NULL REFERENCES workspaces(id) ON DELETE CASCADE,
  name         text NOT NULL,
  grants       jsonb NOT NULL DEFAULT '[]',
  created_at   timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (workspace_id, name)
);

-- Users or services that call the data plane.
CREATE TABLE consumers (
  id           uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  workspace_id text NOT NULL REFERENCES workspaces(id) ON DELETE CASCADE,
  username     text NOT NULL,
  created_at   timestamptz NOT NULL DEFAULT now(),
  UNIQUE (workspace_id, username)
);

-- API keys are shown once and stored as SHA-256 of the key; the prefix identifies them in lists.
CREATE TABLE api_keys (
  id           uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  workspace_id text NOT NULL REFERENCES workspaces(id) ON DELETE CASCADE,
  consumer_id  uuid NOT NULL REFERENCES consumers(id) ON DELETE CASCADE,
  key_prefix   text NOT NULL,
  key_hash     bytea NOT NULL UNIQUE,
  created_at   timestamptz NOT NULL DEFAULT now(),
  revoked_at   timestamptz
);

-- Control-plane credentials (admin API, operators). workspace_id NULL = every workspace.
CREATE TABLE admin_tokens (
  id           uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  workspace_id text REFERENCES workspaces(id) ON DELETE CASCADE,
  name         text NOT NULL,
  role         text NOT NULL CHECK (role IN ('admin', 'operator', 'developer', 'viewer')),
  token_hash   bytea NOT NULL UNIQUE,
  created_at   timestamptz NOT NULL DEFAULT now(),
  revoked_at   timestamptz
);

-- Per-workspace secret for signing webhooks (HMAC-SHA256).
CREATE TABLE webhook_secrets (
  workspace_id text PRIMARY KEY REFERENCES workspaces(id) ON DELETE CASCADE,
  secret       text NOT NULL,
  created_at   timestamptz NOT NULL DEFAULT now()
);

-- Routes or event types bound to a workflow type.
CREATE TABLE workflow_triggers (
  id             uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  workspace_id   text NOT NULL REFERENCES workspaces(id) ON DELETE CASCADE,
  route_methods  text[],
  route_path     text,
  event_type     text,
  workflow_type  text NOT NULL,
  input_template jsonb,
  callback_url   text,
  enabled        boolean NOT NULL DEFAULT true,
  created_at     timestamptz NOT NULL DEFAULT now(),
  CHECK ((route_path IS NOT NULL) <> (event_type IS NOT NULL))
);
CREATE INDEX workflow_triggers_route ON workflow_triggers (workspace_id, route_path) WHERE route_path IS NOT NULL;
CREATE INDEX workflow_triggers_event ON workflow_triggers (workspace_id, event_type) WHERE event_type IS NOT NULL;

-- Insert-only audit log with before/after snapshots. UPDATE and DELETE are refused by the
-- database itself (trigger below), whatever role the caller has.
CREATE TABLE audit_logs (
  id           bigserial PRIMARY KEY,
  at           timestamptz NOT NULL DEFAULT now(),
  workspace_id text,
  actor        text NOT NULL,
  action       text NOT NULL,
  entity_type  text NOT NULL,
  entity_id    text,
  before       jsonb,
  after        jsonb,
  correlation_id text
);
CREATE INDEX audit_logs_workspace_at ON audit_logs (workspace_id, at DESC);

CREATE FUNCTION audit_logs_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  RAISE EXCEPTION 'audit_logs is insert-only' USING ERRCODE = 'insufficient_privilege';
END $$;
CREATE TRIGGER audit_logs_insert_only BEFORE UPDATE OR DELETE OR TRUNCATE ON audit_logs
  FOR EACH STATEMENT EXECUTE FUNCTION audit_logs_refuse_change();

-- Every error and a sample of successes from the data plane.
CREATE TABLE api_calls (
  id            bigserial PRIMARY KEY,
  at            timestamptz NOT NULL DEFAULT now(),
  workspace_id  text,
  method        text NOT NULL,
  path          text NOT NULL,
  status        int NOT NULL,
  latency_ms    double precision NOT NULL,
  request_id    text
);
