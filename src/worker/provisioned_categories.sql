-- provisioned_categories: every category whose stock was created in Redis, with the
-- sale terms (and seat map) a rebuilt stock needs.
SELECT category.id, category.event_id, category.price, category.currency, category.quota, category.max_per_user,
       category.seat_map,
       event.sale_starts_at, event.sale_ends_at
FROM ticket_categories AS category
JOIN events AS event ON event.id = category.event_id
WHERE category.stock_provisioned_at IS NOT NULL
ORDER BY category.id
