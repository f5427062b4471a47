-- Payments: each tenant's limits, one row per payment, and a double-entry ledger.
--
-- The ledger is insert-only for the processes (grantAppRole revokes UPDATE and DELETE), unique
-- per payment, kind and side, so a retried activity cannot book twice, and a deferred constraint
-- trigger refuses a transaction that leaves a payment's debits and credits unequal.

CREATE TABLE payment_settings (
  workspace_id       text PRIMARY KEY REFERENCES workspaces(id) ON DELETE CASCADE,
  -- Amounts in minor units (cents); a payment above the threshold waits for an approval.
  approval_threshold bigint NOT NULL DEFAULT 100000 CHECK (approval_threshold >= 0),
  max_amount         bigint NOT NULL DEFAULT 10000000 CHECK (max_amount > 0),
  -- NULL: every ISO 4217 currency.
  currencies         text[],
  updated_at         timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE payments (
  workspace_id text NOT NULL REFERENCES workspaces(id) ON DELETE CASCADE,
  payment_id   text NOT NULL,
  charge_id    text NOT NULL,
  amount       bigint NOT NULL CHECK (amount > 0),
  currency     text NOT NULL,
  payer        text NOT NULL,
  description  text,
  created_at   timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (workspace_id, payment_id)
);

CREATE TABLE ledger_entries (
  id           bigserial PRIMARY KEY,
  workspace_id text NOT NULL,
  payment_id   text NOT NULL,
  kind         text NOT NULL CHECK (kind IN ('charge', 'refund')),
  side         text NOT NULL CHECK (side IN ('debit', 'credit')),
  account      text NOT NULL,
  amount       bigint NOT NULL CHECK (amount > 0),
  currency     text NOT NULL,
  created_at   timestamptz NOT NULL DEFAULT now(),
  UNIQUE (workspace_id, payment_id, kind, side),
  FOREIGN KEY (workspace_id, payment_id) REFERENCES payments(workspace_id, payment_id) ON DELETE CASCADE
);

CREATE FUNCTION ledger_balanced() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE imbalance bigint;
BEGIN
  SELECT coalesce(sum(CASE side WHEN 'debit' THEN amount ELSE -amount END), 0) INTO imbalance
    FROM ledger_entries WHERE workspace_id = NEW.workspace_id AND payment_id = NEW.payment_id;
  IF imbalance <> 0 THEN
    RAISE EXCEPTION 'ledger entries of payment % do not balance (%)', NEW.payment_id, imbalance USING ERRCODE = 'check_violation';
  END IF;
  RETURN NULL;
END $$;
CREATE CONSTRAINT TRIGGER ledger_entries_balanced AFTER INSERT ON ledger_entries
  DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION ledger_balanced();

DO $$
DECLARE t text;
BEGIN
  FOREACH t IN ARRAY ARRAY['payment_settings', 'payments', 'ledger_entries'] LOOP
    EXECUTE format('ALTER TABLE %I ENABLE ROW LEVEL SECURITY', t);
    EXECUTE format('ALTER TABLE %I FORCE ROW LEVEL SECURITY', t);
    EXECUTE format('CREATE POLICY workspace_isolation ON %I USING (flowgate_sees(workspace_id)) WITH CHECK (flowgate_sees(workspace_id))', t);
  END LOOP;
END $$;
