-- The business key a payment charged under, kept for good: the provider remembers an
-- idempotency key for 24 hours (as Stripe does), so "the same business key never charges twice"
-- cannot rest on it alone. The first payment to claim a key owns it; another payment with the
-- same key is a duplicate, whenever it comes.
CREATE TABLE payment_keys (
  workspace_id text NOT NULL REFERENCES workspaces(id) ON DELETE CASCADE,
  charge_key   text NOT NULL,
  payment_id   text NOT NULL,
  created_at   timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (workspace_id, charge_key)
);

ALTER TABLE payment_keys ENABLE ROW LEVEL SECURITY;
ALTER TABLE payment_keys FORCE ROW LEVEL SECURITY;
CREATE POLICY workspace_isolation ON payment_keys USING (flowgate_sees(workspace_id)) WITH CHECK (flowgate_sees(workspace_id));
