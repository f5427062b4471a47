-- The writes the database failover runbook makes on a newly promoted primary, with the processes'
-- own login, to prove it takes them. Platform data: no workspace, no row-level security.

CREATE TABLE dr_write_checks (
  id         bigserial PRIMARY KEY,
  run_id     text NOT NULL,
  checked_at timestamptz NOT NULL DEFAULT now()
);
