-- The gateway pipeline (issue #7): services choose their balancing algorithm and health checks;
-- a route may answer by itself (a static response) or fan out to several services (an
-- aggregate) instead of proxying to one service; api_calls keeps who called, the consumer and
-- the upstream target, and for errors the masked bodies.

ALTER TABLE services
  ADD COLUMN algorithm    text  NOT NULL DEFAULT 'round-robin',
  ADD COLUMN healthchecks jsonb NOT NULL DEFAULT '{}';

ALTER TABLE routes
  ALTER COLUMN service_id DROP NOT NULL,
  ADD COLUMN static_response jsonb,
  ADD COLUMN aggregate       jsonb,
  ADD CONSTRAINT routes_one_answer CHECK (num_nonnulls(service_id, static_response, aggregate) = 1);

ALTER TABLE api_calls
  ADD COLUMN consumer      text,
  ADD COLUMN route         text,
  ADD COLUMN upstream      text,
  ADD COLUMN client_ip     text,
  ADD COLUMN error_code    text,
  ADD COLUMN request_body  text,
  ADD COLUMN response_body text;

CREATE INDEX api_calls_workspace_at ON api_calls (workspace_id, at DESC);
