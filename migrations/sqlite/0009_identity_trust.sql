-- Identity verification trust (issue 17): scans wait for a reviewer, only the scans
-- the product needs are kept, and identity SMS codes and scans are capped.

-- Where a stored scan stands: 'pending' (awaiting review) or 'approved'. Rejected and
-- superseded scans are deleted.
ALTER TABLE passport_scans ADD COLUMN review_state TEXT NOT NULL DEFAULT 'pending';
CREATE INDEX passport_scans_by_review ON passport_scans (review_state, uploaded_at);

-- Hourly and daily counters (and the last use) per subject (a person or a digest of a phone number).
CREATE TABLE identity_rate_limits (
    subject     TEXT   NOT NULL PRIMARY KEY,
    hour_start  BIGINT NOT NULL,             -- microseconds since the epoch
    hour_count  BIGINT NOT NULL,
    day_start   BIGINT NOT NULL,
    day_count   BIGINT NOT NULL,
    last_at     BIGINT NOT NULL DEFAULT 0    -- the last use, for a least gap
);
