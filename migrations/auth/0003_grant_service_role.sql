-- Least privilege: the auth service connects as a login role that is a member of the group role
-- portico_auth, never as the database owner that runs these migrations. The group may read and
-- write the auth service's own tables and nothing else (no DDL, no other schema). Login roles
-- and their passwords are per environment (docs/data-stores.md): the dev launcher and the
-- test fixtures create portico_auth_app, CloudNativePG manages it in Kubernetes.
--
-- Roles are cluster-wide: created here only if missing (an operator may have made it already;
-- then the owner needs no CREATEROLE).
DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'portico_auth') THEN
        CREATE ROLE portico_auth NOLOGIN;
    END IF;
END
$$;

GRANT USAGE ON SCHEMA auth TO portico_auth;
GRANT SELECT, INSERT, UPDATE, DELETE ON auth.credentials, auth.outbox TO portico_auth;
GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA auth TO portico_auth;

-- Tables and sequences later migrations create in this schema get the same grants.
ALTER DEFAULT PRIVILEGES IN SCHEMA auth
    GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO portico_auth;
ALTER DEFAULT PRIVILEGES IN SCHEMA auth GRANT USAGE, SELECT ON SEQUENCES TO portico_auth;
