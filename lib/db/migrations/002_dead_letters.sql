-- Triggers that could not be started after the consumer's delivery limit. The status API
-- reports them as FAILED instead of ACCEPTED; the message itself stays in the
-- FLOWGATE_DEAD_LETTERS stream for inspection and replay.
CREATE TABLE dead_letters (
  execution_id  text PRIMARY KEY,
  workspace_id  text NOT NULL,
  kind          text NOT NULL CHECK (kind IN ('trigger', 'signal')),
  workflow_type text,
  reason        text NOT NULL,
  deliveries    int NOT NULL,
  at            timestamptz NOT NULL DEFAULT now()
);
