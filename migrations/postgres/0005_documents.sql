-- Content-addressed files (rendered PDF documents): the key is the SHA-256 of the
-- bytes, so storing the same document twice keeps one row, and an event that
-- records the hash pins exactly these bytes.
CREATE TABLE files (
    sha256     text        NOT NULL,
    media_type text        NOT NULL,
    size       bigint      NOT NULL,
    bytes      bytea       NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT files_pkey PRIMARY KEY (sha256)
);
