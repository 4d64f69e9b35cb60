-- Secrets of accounts, kept out of the journal: password hashes, TOTP secrets,
-- hashed one-time codes, sessions with hashed refresh tokens, and counters
-- against guessing. Written only by the accounts service.
CREATE TABLE account_credentials (
    account_id     TEXT PRIMARY KEY,
    -- Argon2id PHC string; NULL until the holder sets a password.
    password_hash  TEXT,
    -- active, deactivated or closed: mirrors the account's events, written
    -- before a closing event so a crash in between fails closed.
    status         TEXT NOT NULL,
    totp_secret    TEXT,
    totp_pending   TEXT,
    -- The last accepted 30-second step: a code is never accepted twice.
    totp_last_step BIGINT,
    updated_at     TEXT NOT NULL
);

-- One-time codes, stored as keyed hashes only.
CREATE TABLE one_time_codes (
    purpose     TEXT NOT NULL,
    subject     TEXT NOT NULL,
    code_hash   BLOB NOT NULL,
    account_id  TEXT,
    -- How a sign-in challenge is answered: code or totp.
    method      TEXT,
    expires_at  TEXT NOT NULL,
    attempts    INTEGER NOT NULL DEFAULT 0,
    sent_at     TEXT NOT NULL,
    -- Sends in the current throttling window and when the window began.
    sends       INTEGER NOT NULL DEFAULT 1,
    window_from TEXT NOT NULL,
    CONSTRAINT one_time_codes_pkey PRIMARY KEY (purpose, subject)
);

CREATE TABLE sessions (
    id              TEXT PRIMARY KEY,
    account_id      TEXT NOT NULL,
    role            TEXT NOT NULL,
    organisation_id TEXT,
    created_at      TEXT NOT NULL,
    expires_at      TEXT NOT NULL,
    revoked_at      TEXT,
    revoke_reason   TEXT
);
CREATE INDEX sessions_by_account ON sessions (account_id);

-- Every refresh token of a session (its family); spent ones are kept to detect reuse.
CREATE TABLE refresh_tokens (
    token_hash BLOB PRIMARY KEY,
    session_id TEXT NOT NULL,
    created_at TEXT NOT NULL,
    used_at    TEXT
);
CREATE INDEX refresh_tokens_by_session ON refresh_tokens (session_id);

-- Failed credential checks per account and per client address.
CREATE TABLE sign_in_throttle (
    scope        TEXT NOT NULL,
    key          TEXT NOT NULL,
    failures     INTEGER NOT NULL,
    last_failure TEXT NOT NULL,
    CONSTRAINT sign_in_throttle_pkey PRIMARY KEY (scope, key)
);
