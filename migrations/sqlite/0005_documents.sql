-- Content-addressed files (rendered PDF documents): the key is the SHA-256 of the
-- bytes, so storing the same document twice keeps one row, and an event that
-- records the hash pins exactly these bytes.
CREATE TABLE files (
    sha256     TEXT    NOT NULL,
    media_type TEXT    NOT NULL,
    size       INTEGER NOT NULL,
    bytes      BLOB    NOT NULL,
    created_at TEXT    NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    CONSTRAINT files_pkey PRIMARY KEY (sha256)
);
