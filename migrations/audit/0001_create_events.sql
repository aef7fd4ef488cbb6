-- The audit service's schema: one row per domain event consumed from portico:events:v1.
CREATE SCHEMA IF NOT EXISTS audit;

-- The primary key is the event's own id (the stream entry's `id` field): a redelivered or
-- re-published event is an INSERT … ON CONFLICT (id) DO NOTHING, so each event is stored once.
CREATE TABLE audit.events (
    id          uuid        PRIMARY KEY,
    type        text        NOT NULL CHECK (char_length(type) BETWEEN 1 AND 100),
    subject     text        NOT NULL,
    actor       text        NOT NULL DEFAULT '',
    service     text        NOT NULL DEFAULT '',
    occurred_at timestamptz NOT NULL,
    recorded_at timestamptz NOT NULL DEFAULT now(),
    payload     jsonb       NOT NULL DEFAULT '{}'::jsonb,
    trace_id    text        NOT NULL DEFAULT ''
);

-- Keyset pagination, newest first: ORDER BY recorded_at DESC, id DESC with
-- WHERE (recorded_at, id) < ($1, $2), optionally filtered by subject or type.
CREATE INDEX events_recorded_at_id_idx ON audit.events (recorded_at, id);
CREATE INDEX events_subject_recorded_at_id_idx ON audit.events (subject, recorded_at, id);
CREATE INDEX events_type_recorded_at_id_idx ON audit.events (type, recorded_at, id);
