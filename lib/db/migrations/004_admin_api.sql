-- The Admin API's entities, versioned config, the audit outbox and row-level security.
--
-- Every workspace-scoped table is under FORCE ROW LEVEL SECURITY: a query sees (and writes)
-- only rows of the workspace named by the transaction setting `flowgate.workspace`, or every
-- row when `flowgate.scope` is 'platform' (credential lookups, the data plane's config pull).
-- A query run outside either scope sees nothing: a forgotten WHERE clause cannot leak.
-- Later migrations that touch data must `SET LOCAL flowgate.scope = 'platform'` first.

ALTER TABLE workspaces ADD COLUMN config_version bigint NOT NULL DEFAULT 0;
ALTER TABLE workspaces ADD COLUMN updated_at timestamptz NOT NULL DEFAULT now();

ALTER TABLE rbac_roles ADD COLUMN id uuid NOT NULL DEFAULT gen_random_uuid() UNIQUE;
ALTER TABLE rbac_roles ADD COLUMN description text;
ALTER TABLE rbac_roles ADD COLUMN row_version int NOT NULL DEFAULT 1;
ALTER TABLE rbac_roles ADD COLUMN updated_at timestamptz NOT NULL DEFAULT now();

ALTER TABLE consumers ADD COLUMN custom_id text;
ALTER TABLE consumers ADD COLUMN roles text[] NOT NULL DEFAULT '{}';
ALTER TABLE consumers ADD COLUMN tags text[] NOT NULL DEFAULT '{}';
ALTER TABLE consumers ADD COLUMN row_version int NOT NULL DEFAULT 1;
ALTER TABLE consumers ADD COLUMN updated_at timestamptz NOT NULL DEFAULT now();

-- Custom roles are allowed as well as the four built-in ones.
ALTER TABLE admin_tokens DROP CONSTRAINT admin_tokens_role_check;

CREATE TABLE services (
  id                 uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  workspace_id       text NOT NULL REFERENCES workspaces(id) ON DELETE CASCADE,
  name               text NOT NULL,
  url                text,
  targets            jsonb NOT NULL DEFAULT '[]',
  connect_timeout_ms int NOT NULL DEFAULT 5000,
  read_timeout_ms    int NOT NULL DEFAULT 5000,
  retries            int NOT NULL DEFAULT 0,
  enabled            boolean NOT NULL DEFAULT true,
  tags               text[] NOT NULL DEFAULT '{}',
  row_version        int NOT NULL DEFAULT 1,
  created_at         timestamptz NOT NULL DEFAULT now(),
  updated_at         timestamptz NOT NULL DEFAULT now(),
  UNIQUE (workspace_id, name)
);

CREATE TABLE routes (
  id              uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  workspace_id    text NOT NULL REFERENCES workspaces(id) ON DELETE CASCADE,
  name            text NOT NULL,
  service_id      uuid NOT NULL REFERENCES services(id) ON DELETE RESTRICT,
  methods         text[] NOT NULL,
  paths           text[] NOT NULL,
  hosts           text[] NOT NULL DEFAULT '{}',
  strip_path      boolean NOT NULL DEFAULT false,
  transformations jsonb NOT NULL DEFAULT '{}',
  enabled         boolean NOT NULL DEFAULT true,
  tags            text[] NOT NULL DEFAULT '{}',
  row_version     int NOT NULL DEFAULT 1,
  created_at      timestamptz NOT NULL DEFAULT now(),
  updated_at      timestamptz NOT NULL DEFAULT now(),
  UNIQUE (workspace_id, name)
);

CREATE TABLE plugins (
  id            uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  workspace_id  text NOT NULL REFERENCES workspaces(id) ON DELETE CASCADE,
  name          text NOT NULL,
  service_id    uuid REFERENCES services(id) ON DELETE RESTRICT,
  route_id      uuid REFERENCES routes(id) ON DELETE RESTRICT,
  consumer_id   uuid REFERENCES consumers(id) ON DELETE RESTRICT,
  config        jsonb NOT NULL DEFAULT '{}',
  enabled       boolean NOT NULL DEFAULT true,
  tags          text[] NOT NULL DEFAULT '{}',
  row_version   int NOT NULL DEFAULT 1,
  created_at    timestamptz NOT NULL DEFAULT now(),
  updated_at    timestamptz NOT NULL DEFAULT now()
);
-- One instance of a plugin per scope (workspace-wide, a service, a route, a consumer).
CREATE UNIQUE INDEX plugins_one_per_scope ON plugins (workspace_id, name,
  coalesce(service_id, '00000000-0000-0000-0000-000000000000'),
  coalesce(route_id, '00000000-0000-0000-0000-000000000000'),
  coalesce(consumer_id, '00000000-0000-0000-0000-000000000000'));

CREATE TABLE rate_limiting_policies (
  id              uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  workspace_id    text NOT NULL REFERENCES workspaces(id) ON DELETE CASCADE,
  name            text NOT NULL,
  scope           text NOT NULL CHECK (scope IN ('workspace', 'route', 'consumer')),
  route_id        uuid REFERENCES routes(id) ON DELETE RESTRICT,
  consumer_id     uuid REFERENCES consumers(id) ON DELETE RESTRICT,
  "limit"         int NOT NULL CHECK ("limit" > 0),
  window_seconds  int NOT NULL CHECK (window_seconds > 0),
  algorithm       text NOT NULL CHECK (algorithm IN ('fixed-window', 'sliding-window', 'token-bucket')),
  enabled         boolean NOT NULL DEFAULT true,
  tags            text[] NOT NULL DEFAULT '{}',
  row_version     int NOT NULL DEFAULT 1,
  created_at      timestamptz NOT NULL DEFAULT now(),
  updated_at      timestamptz NOT NULL DEFAULT now(),
  UNIQUE (workspace_id, name),
  CHECK ((scope = 'route') = (route_id IS NOT NULL) AND (scope = 'consumer') = (consumer_id IS NOT NULL))
);

ALTER TABLE workflow_triggers ADD COLUMN name text;
UPDATE workflow_triggers SET name = 'trigger-' || left(id::text, 8);
ALTER TABLE workflow_triggers ALTER COLUMN name SET NOT NULL;
ALTER TABLE workflow_triggers ADD COLUMN row_version int NOT NULL DEFAULT 1;
ALTER TABLE workflow_triggers ADD CONSTRAINT workflow_triggers_name UNIQUE (workspace_id, name);

-- Several named webhook secrets per workspace (rotation: add the new one, then delete the
-- old); webhooks are signed with the newest.
ALTER TABLE webhook_secrets DROP CONSTRAINT webhook_secrets_pkey;
ALTER TABLE webhook_secrets ADD COLUMN id uuid PRIMARY KEY DEFAULT gen_random_uuid();
ALTER TABLE webhook_secrets ADD COLUMN name text NOT NULL DEFAULT 'default';
ALTER TABLE webhook_secrets ADD CONSTRAINT webhook_secrets_name UNIQUE (workspace_id, name);

-- Every change to a workspace's config bumps workspaces.config_version and stores the whole
-- resulting config here: any version can be read back and diffed against another.
CREATE TABLE config_versions (
  workspace_id   text NOT NULL REFERENCES workspaces(id) ON DELETE CASCADE,
  version        bigint NOT NULL,
  snapshot       jsonb NOT NULL,
  actor          text NOT NULL,
  summary        text NOT NULL,
  correlation_id text,
  created_at     timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (workspace_id, version)
);

ALTER TABLE audit_logs ADD COLUMN config_version bigint;

-- Transactional outbox: each audit row is queued here in the same transaction and sent to
-- Kafka by the admin process, so no audit record is lost while Kafka is down.
CREATE TABLE audit_outbox (
  audit_id bigint PRIMARY KEY REFERENCES audit_logs(id)
);
CREATE FUNCTION audit_logs_enqueue() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  INSERT INTO audit_outbox (audit_id) VALUES (NEW.id);
  RETURN NEW;
END $$;
CREATE TRIGGER audit_logs_to_outbox AFTER INSERT ON audit_logs FOR EACH ROW EXECUTE FUNCTION audit_logs_enqueue();

-- Row-level security on every workspace-scoped table.
CREATE FUNCTION flowgate_sees(ws text) RETURNS boolean LANGUAGE sql STABLE AS $$
  SELECT current_setting('flowgate.scope', true) = 'platform'
      OR (ws IS NOT NULL AND ws = current_setting('flowgate.workspace', true))
$$;

DO $$
DECLARE t text;
BEGIN
  FOREACH t IN ARRAY ARRAY['rbac_roles', 'consumers', 'api_keys', 'admin_tokens', 'webhook_secrets', 'workflow_triggers',
    'services', 'routes', 'plugins', 'rate_limiting_policies', 'config_versions', 'audit_logs', 'api_calls', 'dead_letters'] LOOP
    EXECUTE format('ALTER TABLE %I ENABLE ROW LEVEL SECURITY', t);
    EXECUTE format('ALTER TABLE %I FORCE ROW LEVEL SECURITY', t);
    EXECUTE format('CREATE POLICY workspace_isolation ON %I USING (flowgate_sees(workspace_id)) WITH CHECK (flowgate_sees(workspace_id))', t);
  END LOOP;
END $$;
ALTER TABLE workspaces ENABLE ROW LEVEL SECURITY;
ALTER TABLE workspaces FORCE ROW LEVEL SECURITY;
CREATE POLICY workspace_isolation ON workspaces USING (flowgate_sees(id)) WITH CHECK (flowgate_sees(id));
