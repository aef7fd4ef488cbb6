-- The auth service's schema: one password credential per user, created by sign-up.
--
-- A row starts 'pending' (it reserves the email and remembers the client's idempotency key
-- while the user is being created in the users service) and becomes 'active' once it names the
-- user it belongs to. Only active rows can log in; see auth.proto (SignUp) for the protocol.
CREATE SCHEMA IF NOT EXISTS auth;

CREATE TABLE auth.credentials (
    id              uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id         uuid        UNIQUE,
    email           text        NOT NULL CHECK (char_length(email) BETWEEN 3 AND 254),
    display_name    text        NOT NULL CHECK (char_length(display_name) BETWEEN 1 AND 100),
    password_hash   text        NOT NULL,
    state           text        NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'active')),
    idempotency_key uuid        NOT NULL UNIQUE,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    -- An active credential always names its user.
    CONSTRAINT credentials_active_has_user CHECK (state = 'pending' OR user_id IS NOT NULL)
);

-- One credential per email, case-insensitively (the users service compares emails the same way).
CREATE UNIQUE INDEX credentials_email_lower_key ON auth.credentials (lower(email));

-- Serves the reconciler: pending rows, oldest first.
CREATE INDEX credentials_pending_idx ON auth.credentials (created_at) WHERE state = 'pending';
