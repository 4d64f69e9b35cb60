-- Delivery of notifications (F1): one row per notification and channel, written
-- by the dispatcher. A row is claimed ('sending') before the message goes out,
-- so two server processes never send the same message twice at once; a claim
-- left by a crashed process is taken over after a while (at-least-once).
CREATE TABLE notification_deliveries (
    position   BIGINT NOT NULL,
    account_id TEXT   NOT NULL,
    -- 'email', 'sms', or 'none' when the person chose no usable channel.
    channel    TEXT   NOT NULL,
    -- 'sending', 'sent', 'failed' (will be retried), 'gave_up', 'skipped'.
    status     TEXT   NOT NULL,
    attempts   INTEGER NOT NULL DEFAULT 0,
    last_error TEXT,
    updated_at BIGINT NOT NULL,
    CONSTRAINT notification_deliveries_pkey PRIMARY KEY (position, account_id, channel)
);
CREATE INDEX notification_deliveries_by_status ON notification_deliveries (status, updated_at);
