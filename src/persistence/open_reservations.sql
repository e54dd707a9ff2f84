-- open_reservations: the held and confirmed reservations of a category, which a
-- rebuilt stock must account for.
-- $1 category id
SELECT id, status, event_id, category_id, user_id, quantity, amount, currency, created_at, expires_at,
       confirmed_at, payment_id,
       (SELECT array_agg(seat ORDER BY position) FROM reservation_seats WHERE reservation_id = reservations.id)
           AS seats
FROM reservations
WHERE category_id = $1 AND status IN ('held', 'confirmed')
ORDER BY id
