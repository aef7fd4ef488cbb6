-- The auth service's outbox: one row per domain event. Credential events are written in the
-- same transaction as the credential change; session events (login, revocation), whose state
-- lives in Valkey, right after the Valkey change (see README "Events"). The relay publishes the
-- rows to the Valkey Stream in seq order, marks them published, and deletes them after retention.
CREATE TABLE auth.outbox (
    id            uuid        PRIMARY KEY,
    seq           bigint      GENERATED ALWAYS AS IDENTITY,
    type          text        NOT NULL CHECK (char_length(type) BETWEEN 1 AND 100),
    subject       text        NOT NULL,
    actor         text,
    occurred_at   timestamptz NOT NULL,
    payload       jsonb       NOT NULL DEFAULT '{}',
    trace_context jsonb       NOT NULL DEFAULT '{}',
    published_at  timestamptz
);

-- Serves the relay: unpublished rows in publishing order.
CREATE INDEX outbox_unpublished_seq_idx ON auth.outbox (seq) WHERE published_at IS NULL;

-- Serves the retention cleanup: published rows, oldest first.
CREATE INDEX outbox_published_at_idx ON auth.outbox (published_at) WHERE published_at IS NOT NULL;
