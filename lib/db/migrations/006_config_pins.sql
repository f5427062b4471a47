-- Which config version a group of gateway instances serves for a workspace. Without a pin they
-- serve the newest version; a pin for group '*' holds every group on a version (changes are then
-- stored but served only through a rollout), and a pin for one group (the canary) overrides it.

CREATE TABLE config_pins (
  workspace_id  text NOT NULL REFERENCES workspaces(id) ON DELETE CASCADE,
  gateway_group text NOT NULL CHECK (gateway_group ~ '^(\*|[a-z0-9][a-z0-9-]{0,62})$'),
  version       bigint NOT NULL CHECK (version > 0),
  updated_at    timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (workspace_id, gateway_group),
  FOREIGN KEY (workspace_id, version) REFERENCES config_versions(workspace_id, version)
);

ALTER TABLE config_pins ENABLE ROW LEVEL SECURITY;
ALTER TABLE config_pins FORCE ROW LEVEL SECURITY;
CREATE POLICY workspace_isolation ON config_pins USING (flowgate_sees(workspace_id)) WITH CHECK (flowgate_sees(workspace_id));
