-- The journal: the postgres-es table layout plus a global position, the writing
-- transaction id, the recording time and the per-stream SHA-256 chain.
CREATE TABLE events (
    aggregate_type text        NOT NULL,
    aggregate_id   text        NOT NULL,
    sequence       bigint      NOT NULL CHECK (sequence >= 1),
    event_type     text        NOT NULL,
    event_version  text        NOT NULL,
    payload        jsonb       NOT NULL,
    metadata       jsonb       NOT NULL,
    position       bigserial   NOT NULL,
    tx_id          xid8        NOT NULL DEFAULT pg_current_xact_id(),
    recorded_at    timestamptz NOT NULL DEFAULT clock_timestamp(),
    hash           bytea       NOT NULL CHECK (length(hash) = 32),
    CONSTRAINT events_pkey PRIMARY KEY (aggregate_type, aggregate_id, sequence),
    CONSTRAINT events_position_key UNIQUE (position)
);
-- Global readers walk the journal in (writing transaction, position) order.
CREATE INDEX events_tx_order ON events (tx_id, position);

-- Seals chain event hashes in global order; the newest seal is the digest.
CREATE TABLE seals (
    seal_no        bigint      PRIMARY KEY CHECK (seal_no >= 1),
    first_tx       bigint      NOT NULL,
    first_position bigint      NOT NULL,
    last_tx        bigint      NOT NULL,
    last_position  bigint      NOT NULL,
    event_count    bigint      NOT NULL CHECK (event_count >= 1),
    root           bytea       NOT NULL,
    prev_hash      bytea       NOT NULL,
    hash           bytea       NOT NULL,
    sealed_at      timestamptz NOT NULL DEFAULT now()
);

-- Where each projection has got to, written in the same transaction as its read model.
CREATE TABLE projection_checkpoints (
    name       text        PRIMARY KEY,
    tx_id      bigint      NOT NULL DEFAULT 0,
    position   bigint      NOT NULL DEFAULT 0,
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- Idempotency keys of commands, claimed in the same transaction as the events.
CREATE TABLE idempotency_keys (
    scope          text        NOT NULL,
    key            text        NOT NULL,
    fingerprint    bytea       NOT NULL,
    aggregate_type text        NOT NULL,
    aggregate_id   text        NOT NULL,
    first_sequence bigint      NOT NULL,
    event_count    bigint      NOT NULL,
    created_at     timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT idempotency_keys_pkey PRIMARY KEY (scope, key)
);
