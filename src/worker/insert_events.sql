-- insert_events: append a batch of events to the log, skipping any already recorded
-- (a redelivered copy: the same reservation and type, hence the same event id).
-- Returns when each newly recorded event happened, for the pipeline lag.
-- $1 ids, $2 reservation ids, $3 types, $4 occurred_at, $5 payloads (JSON text),
-- $6 partition, $7 offsets
INSERT INTO reservation_events (id, reservation_id, type, occurred_at, payload, kafka_partition, kafka_offset)
SELECT event.id, event.reservation_id, event.type, event.occurred_at, event.payload::json, $6, event.kafka_offset
FROM UNNEST($1::uuid[], $2::uuid[], $3::text[], $4::timestamptz[], $5::text[], $7::int8[])
    AS event (id, reservation_id, type, occurred_at, payload, kafka_offset)
ON CONFLICT (reservation_id, type) DO NOTHING
RETURNING occurred_at
