-- list_reservations: a user's reservations, newest first.
-- $1 user id, $2 limit
SELECT id, status, event_id, category_id, user_id, quantity, amount, currency, created_at, expires_at,
       confirmed_at, payment_id,
       (SELECT array_agg(seat ORDER BY position) FROM reservation_seats WHERE reservation_id = reservations.id)
           AS seats
FROM reservations
WHERE user_id = $1
ORDER BY created_at DESC, id DESC
LIMIT $2
