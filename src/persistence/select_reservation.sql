-- select_reservation: one reservation by id.
-- $1 reservation id
SELECT id, status, event_id, category_id, user_id, quantity, amount, currency, created_at, expires_at,
       confirmed_at, payment_id,
       (SELECT array_agg(seat ORDER BY position) FROM reservation_seats WHERE reservation_id = reservations.id)
           AS seats
FROM reservations
WHERE id = $1
