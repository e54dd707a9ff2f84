-- upsert_reservations: bring each reservation of a batch (one row per reservation,
-- its most advanced event) to its new status. A status never goes backwards: a held
-- row may become final, a final row never changes, so a late copy of an old event
-- (a redelivery after a newer one) changes nothing.
-- $1 ids, $2 user ids, $3 event ids, $4 category ids, $5 quantities, $6 amounts,
-- $7 currencies, $8 statuses, $9 created_at, $10 expires_at, $11 confirmed_at,
-- $12 payment ids, $13 cancelled_at, $14 expired_at, $15 event ids, $16 event times
INSERT INTO reservations AS current (
    id, user_id, event_id, category_id, quantity, amount, currency, status, created_at, expires_at,
    confirmed_at, payment_id, cancelled_at, expired_at, last_event_id, last_event_at)
SELECT *
FROM UNNEST($1::uuid[], $2::text[], $3::int8[], $4::int8[], $5::int8[], $6::int8[], $7::text[], $8::text[],
    $9::timestamptz[], $10::timestamptz[], $11::timestamptz[], $12::text[], $13::timestamptz[],
    $14::timestamptz[], $15::uuid[], $16::timestamptz[])
ON CONFLICT (id) DO UPDATE SET
    status = EXCLUDED.status,
    confirmed_at = EXCLUDED.confirmed_at,
    payment_id = EXCLUDED.payment_id,
    cancelled_at = EXCLUDED.cancelled_at,
    expired_at = EXCLUDED.expired_at,
    last_event_id = EXCLUDED.last_event_id,
    last_event_at = EXCLUDED.last_event_at,
    updated_at = now()
WHERE current.status = 'held' AND EXCLUDED.status <> 'held'
