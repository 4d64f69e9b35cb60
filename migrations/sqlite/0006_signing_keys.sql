-- Signing keys the server generated for itself in development mode (e.g. the
-- Ed25519 seed of prescription verification tokens), kept so that tokens
-- printed before a restart still verify. Production supplies its keys through
-- configuration and never writes here. Not an event: secrets stay out of the journal.
CREATE TABLE signing_keys (
    name       TEXT   NOT NULL PRIMARY KEY,
    seed       TEXT   NOT NULL,
    created_at BIGINT NOT NULL
);
