SELECT categories.id, categories.event_id, categories.name, categories.price,
       categories.currency, categories.quota, categories.max_per_user, categories.seat_map,
       events.sale_starts_at, events.sale_ends_at
FROM ticket_categories AS categories
JOIN events ON events.id = categories.event_id
WHERE categories.stock_provisioned_at IS NULL
ORDER BY categories.id
LIMIT 1000
