-- The journal: the sqlite-es table layout plus a global position (assigned in
-- commit order under SQLite's single writer), the recording time and the
-- per-stream SHA-256 chain.
CREATE TABLE events (
    aggregate_type TEXT    NOT NULL,
    aggregate_id   TEXT    NOT NULL,
    sequence       INTEGER NOT NULL CHECK (sequence >= 1),
    event_type     TEXT    NOT NULL,
    event_version  TEXT    NOT NULL,
    payload        TEXT    NOT NULL,
    metadata       TEXT    NOT NULL,
    position       INTEGER NOT NULL,
    recorded_at    TEXT    NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    hash           BLOB    NOT NULL CHECK (length(hash) = 32),
    CONSTRAINT events_pkey PRIMARY KEY (aggregate_type, aggregate_id, sequence)
);
CREATE UNIQUE INDEX events_position_key ON events (position);

CREATE TABLE seals (
    seal_no        INTEGER PRIMARY KEY CHECK (seal_no >= 1),
    first_tx       INTEGER NOT NULL,
    first_position INTEGER NOT NULL,
    last_tx        INTEGER NOT NULL,
    last_position  INTEGER NOT NULL,
    event_count    INTEGER NOT NULL CHECK (event_count >= 1),
    root           BLOB    NOT NULL,
    prev_hash      BLOB    NOT NULL,
    hash           BLOB    NOT NULL,
    sealed_at      TEXT    NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
);

CREATE TABLE projection_checkpoints (
    name       TEXT    PRIMARY KEY,
    tx_id      INTEGER NOT NULL DEFAULT 0,
    position   INTEGER NOT NULL DEFAULT 0,
    updated_at TEXT    NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
);

CREATE TABLE idempotency_keys (
    scope          TEXT    NOT NULL,
    key            TEXT    NOT NULL,
    fingerprint    BLOB    NOT NULL,
    aggregate_type TEXT    NOT NULL,
    aggregate_id   TEXT    NOT NULL,
    first_sequence INTEGER NOT NULL,
    event_count    INTEGER NOT NULL,
    created_at     TEXT    NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    CONSTRAINT idempotency_keys_pkey PRIMARY KEY (scope, key)
);
