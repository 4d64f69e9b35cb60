-- Identity verification and access recording (issue 4, A3/A5). Ordinary tables:
-- none of this belongs in events (scans, code hashes), or it is not a change at all
-- (reads of medical data).

-- The SNILS registry, loaded by administrators (a stand-in for the Pension Fund's).
CREATE TABLE snils_registry (
    snils       TEXT NOT NULL PRIMARY KEY,   -- 11 digits, no separators
    surname     TEXT NOT NULL,
    first_name  TEXT NOT NULL,
    patronymic  TEXT,
    birth_date  TEXT NOT NULL,               -- YYYY-MM-DD
    loaded_at   BIGINT NOT NULL              -- microseconds since the epoch
);

-- Passport scans, sealed with AES-256-GCM; the key never lives in this row.
CREATE TABLE passport_scans (
    patient_id  TEXT   NOT NULL,
    sha256      TEXT   NOT NULL,             -- of the plaintext, as in the event
    size        BIGINT NOT NULL,
    format      TEXT   NOT NULL,
    key_id      TEXT   NOT NULL,             -- fingerprint of the sealing key
    nonce       BLOB   NOT NULL,
    ciphertext  BLOB   NOT NULL,
    uploaded_at BIGINT NOT NULL,
    CONSTRAINT passport_scans_pkey PRIMARY KEY (patient_id, sha256)
);

-- The outstanding SMS code of a verification: only its salted hash.
CREATE TABLE identity_codes (
    patient_id  TEXT    NOT NULL PRIMARY KEY,
    phone       TEXT    NOT NULL,
    salt        TEXT    NOT NULL,
    code_hash   TEXT    NOT NULL,
    sent_at     BIGINT  NOT NULL,
    expires_at  BIGINT  NOT NULL,
    attempts    INTEGER NOT NULL DEFAULT 0
);

-- The development data key, generated once per database when none is configured.
-- Production mode refuses to start without KABINET_DATA_KEY and never writes here.
CREATE TABLE development_data_keys (
    key_id     TEXT NOT NULL PRIMARY KEY,
    key_base64 TEXT NOT NULL,
    created_at BIGINT NOT NULL
);

-- Every read of a patient's medical data, by anyone. Append-only.
CREATE TABLE medical_access (
    seq             INTEGER PRIMARY KEY AUTOINCREMENT,
    patient_id      TEXT   NOT NULL,
    at              BIGINT NOT NULL,
    reader_id       TEXT   NOT NULL,
    reader_role     TEXT   NOT NULL,
    reader_org_id   TEXT,
    what            TEXT   NOT NULL,
    object_id       TEXT,
    request_id      TEXT   NOT NULL
);
CREATE INDEX medical_access_by_patient ON medical_access (patient_id, at, seq);
CREATE TRIGGER medical_access_no_update BEFORE UPDATE ON medical_access
BEGIN SELECT RAISE(ABORT, 'medical_access is append-only'); END;
CREATE TRIGGER medical_access_no_delete BEFORE DELETE ON medical_access
BEGIN SELECT RAISE(ABORT, 'medical_access is append-only'); END;
