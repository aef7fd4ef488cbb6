-- Least privilege: the audit service connects as a login role that is a member of the group role
-- portico_audit, never as the database owner that runs these migrations. The audit log is
-- append-only for it: it may read and insert events, never change or delete one, and it sees no
-- other schema. Login roles and their passwords are per environment (docs/data-stores.md):
-- the dev launcher and the test fixtures create portico_audit_app, CloudNativePG manages it in
-- Kubernetes.
--
-- Roles are cluster-wide: created here only if missing (an operator may have made it already;
-- then the owner needs no CREATEROLE).
DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'portico_audit') THEN
        CREATE ROLE portico_audit NOLOGIN;
    END IF;
END
$$;

GRANT USAGE ON SCHEMA audit TO portico_audit;
GRANT SELECT, INSERT ON audit.events TO portico_audit;

-- Tables later migrations create in this schema get the same (append-only) grants.
ALTER DEFAULT PRIVILEGES IN SCHEMA audit GRANT SELECT, INSERT ON TABLES TO portico_audit;
