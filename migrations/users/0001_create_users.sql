-- The users service's schema: one row per user account.
CREATE SCHEMA IF NOT EXISTS users;

CREATE TABLE users.users (
    id           uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    email        text        NOT NULL CHECK (char_length(email) BETWEEN 3 AND 254),
    display_name text        NOT NULL CHECK (char_length(display_name) BETWEEN 1 AND 100),
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now(),
    version      bigint      NOT NULL DEFAULT 1 CHECK (version >= 1)
);

-- Emails are unique case-insensitively: "Ada@Example.com" and "ada@example.com" are one account.
CREATE UNIQUE INDEX users_email_lower_key ON users.users (lower(email));

-- Serves keyset pagination: ORDER BY created_at, id with WHERE (created_at, id) > ($1, $2).
CREATE INDEX users_created_at_id_idx ON users.users (created_at, id);
