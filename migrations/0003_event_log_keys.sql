-- The event log keyed the way the worker writes it, for cheaper inserts.
--
-- An event id is a function of (reservation_id, type) (src/outbox.rs, `event_id`),
-- so the pair is as unique as the id, and a redelivered copy still collides. Keying
-- on it replaces two indexes with one, and that one grows at its right edge:
-- reservation ids are UUIDv7, time-ordered, where event ids are hashes that land
-- on random index pages. It also serves the per-reservation lookups the
-- (reservation_id, occurred_at) index was for: a reservation has at most four events.
-- The payload keeps the published text as it is (json, validated but not decomposed):
-- nothing queries inside it, and jsonb's conversion was a third of each insert.
ALTER TABLE reservation_events DROP CONSTRAINT reservation_events_pkey;
ALTER TABLE reservation_events ADD CONSTRAINT reservation_events_pkey PRIMARY KEY (reservation_id, type);
DROP INDEX reservation_events_by_reservation;
ALTER TABLE reservation_events ALTER COLUMN payload TYPE JSON USING payload::json;
