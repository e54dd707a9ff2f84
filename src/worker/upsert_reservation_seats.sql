-- upsert_reservation_seats: record the seats of each reservation of a batch (one row per
-- seat), and mark them confirmed with the reservation's `confirmed` event. A seat of a
-- category is confirmed at most once (unique index reservation_seats_sold_once), so a
-- second confirmed reservation of a seat is refused (23505) and dead-lettered.
-- $1 reservation ids, $2 category ids, $3 seats, $4 positions, $5 confirmed
INSERT INTO reservation_seats AS current (reservation_id, category_id, seat, position, confirmed)
SELECT *
FROM UNNEST($1::uuid[], $2::int8[], $3::text[], $4::int4[], $5::bool[])
ON CONFLICT (reservation_id, seat) DO UPDATE SET confirmed = true
WHERE EXCLUDED.confirmed AND NOT current.confirmed
