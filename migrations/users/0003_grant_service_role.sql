-- Least privilege: the users service connects as a login role that is a member of the group role
-- portico_users, never as the database owner that runs these migrations. The group may read and
-- write the users service's own tables and nothing else (no DDL, no other schema). Login roles
-- and their passwords are per environment (docs/data-stores.md): the dev launcher and the
-- test fixtures create portico_users_app, CloudNativePG manages it in Kubernetes.
--
-- Roles are cluster-wide: created here only if missing (an operator may have made it already;
-- then the owner needs no CREATEROLE).
DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'portico_users') THEN
        CREATE ROLE portico_users NOLOGIN;
    END IF;
END
$$;

GRANT USAGE ON SCHEMA users TO portico_users;
GRANT SELECT, INSERT, UPDATE, DELETE ON users.users, users.outbox TO portico_users;
GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA users TO portico_users;

-- Tables and sequences later migrations create in this schema get the same grants.
ALTER DEFAULT PRIVILEGES IN SCHEMA users
    GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO portico_users;
ALTER DEFAULT PRIVILEGES IN SCHEMA users GRANT USAGE, SELECT ON SEQUENCES TO portico_users;
