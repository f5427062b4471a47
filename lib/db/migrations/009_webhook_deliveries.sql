-- Webhooks a receiver did not take while their workflow was ending. The workflow does not wait
-- for them: it hands the event over here, and the worker's retrier (lib/webhook-deliveries.ts)
-- keeps posting it, with a growing pause, until the receiver takes it, refuses it with a 4xx, or
-- the retry window (3 days by default) is over. Every state stays readable for the tenant.
CREATE TABLE webhook_deliveries (
  workspace_id    text NOT NULL,
  event_id        text NOT NULL,
  url             text NOT NULL,
  payload         jsonb NOT NULL,
  state           text NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'delivered', 'refused', 'abandoned')),
  attempts        int NOT NULL DEFAULT 0,
  last_status     int,
  last_error      text,
  next_attempt_at timestamptz NOT NULL DEFAULT now(),
  created_at      timestamptz NOT NULL DEFAULT now(),
  updated_at      timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (workspace_id, event_id)
);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (next_attempt_at) WHERE state = 'pending';

ALTER TABLE webhook_deliveries ENABLE ROW LEVEL SECURITY;
ALTER TABLE webhook_deliveries FORCE ROW LEVEL SECURITY;
CREATE POLICY workspace_isolation ON webhook_deliveries USING (flowgate_sees(workspace_id)) WITH CHECK (flowgate_sees(workspace_id));
