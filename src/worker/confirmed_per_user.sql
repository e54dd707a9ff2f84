-- confirmed_per_user: confirmed tickets per user in one category, the sold part of each
-- user's count in Redis `holders` (Redis keeps no per-user sold count of its own).
-- $1 category id
SELECT user_id, sum(quantity)::int8 AS tickets
FROM reservations
WHERE category_id = $1 AND status = 'confirmed'
GROUP BY user_id
