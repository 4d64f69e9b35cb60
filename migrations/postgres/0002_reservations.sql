-- Reservations hold rules that span aggregates (one booking per slot, no
-- overlapping bookings of one patient). They are written only by the journal, in
-- the same transaction as the events that take or release them.
CREATE TABLE reservations (
    scope text NOT NULL,
    key   text NOT NULL,
    owner text NOT NULL,
    CONSTRAINT reservations_pkey PRIMARY KEY (scope, key)
);
CREATE INDEX reservations_by_owner ON reservations (owner);
