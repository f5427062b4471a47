-- Runs once, on the first start of the postgres image, as its superuser.
-- `flowgate` owns the schema (migrations, run by `flowgate provision`); the processes connect as
-- `flowgate_app`, which has data access only. Neither is a superuser or has BYPASSRLS, so
-- row-level security applies to both (a superuser would bypass it).
CREATE ROLE flowgate LOGIN NOSUPERUSER NOBYPASSRLS PASSWORD 'flowgate';
CREATE ROLE flowgate_app LOGIN NOSUPERUSER NOBYPASSRLS PASSWORD 'flowgate_app';
CREATE DATABASE flowgate OWNER flowgate;
