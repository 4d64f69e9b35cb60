-- Secrets of accounts, kept out of the journal: password hashes, TOTP secrets,
-- hashed one-time codes, sessions with hashed refresh tokens, and counters
-- against guessing. Written only by the accounts service.
CREATE TABLE account_credentials (
    account_id     text PRIMARY KEY,
    -- Argon2id PHC string; NULL until the holder sets a password.
    password_hash  text,
    -- active, deactivated or closed: mirrors the account's events, written
    -- before a closing event so a crash in between fails closed.
    status         text NOT NULL,
    totp_secret    text,
    totp_pending   text,
    -- The last accepted 30-second step: a code is never accepted twice.
    totp_last_step bigint,
    updated_at     timestamptz NOT NULL
);

-- One-time codes, stored as keyed hashes only.
CREATE TABLE one_time_codes (
    purpose     text NOT NULL,
    subject     text NOT NULL,
    code_hash   bytea NOT NULL,
    account_id  text,
    -- How a sign-in challenge is answered: code or totp.
    method      text,
    expires_at  timestamptz NOT NULL,
    attempts    bigint NOT NULL DEFAULT 0,
    sent_at     timestamptz NOT NULL,
    -- Sends in the current throttling window and when the window began.
    sends       bigint NOT NULL DEFAULT 1,
    window_from timestamptz NOT NULL,
    CONSTRAINT one_time_codes_pkey PRIMARY KEY (purpose, subject)
);

CREATE TABLE sessions (
    id              text PRIMARY KEY,
    account_id      text NOT NULL,
    role            text NOT NULL,
    organisation_id text,
    created_at      timestamptz NOT NULL,
    expires_at      timestamptz NOT NULL,
    revoked_at      timestamptz,
    revoke_reason   text
);
CREATE INDEX sessions_by_account ON sessions (account_id);

-- Every refresh token of a session (its family); spent ones are kept to detect reuse.
CREATE TABLE refresh_tokens (
    token_hash bytea PRIMARY KEY,
    session_id text NOT NULL,
    created_at timestamptz NOT NULL,
    used_at    timestamptz
);
CREATE INDEX refresh_tokens_by_session ON refresh_tokens (session_id);

-- Failed credential checks per account and per client address.
CREATE TABLE sign_in_throttle (
    scope        text NOT NULL,
    key          text NOT NULL,
    failures     bigint NOT NULL,
    last_failure timestamptz NOT NULL,
    CONSTRAINT sign_in_throttle_pkey PRIMARY KEY (scope, key)
);
