-- select_category: one ticket category by id.
SELECT id, event_id, name, price, currency, quota, max_per_user, seat_map
FROM ticket_categories
WHERE id = $1
