SELECT id, event_id, name, price, currency, quota, max_per_user, seat_map
FROM ticket_categories
WHERE event_id = ANY($1)
ORDER BY event_id, id
