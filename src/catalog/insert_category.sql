WITH inserted AS (
    INSERT INTO ticket_categories (event_id, name, price, currency, quota, max_per_user, seat_map)
    VALUES ($1, $2, $3, $4, $5, $6, $7)
    RETURNING id, event_id, name, price, currency, quota, max_per_user, seat_map
)
SELECT inserted.id, inserted.event_id, inserted.name, inserted.price, inserted.currency,
       inserted.quota, inserted.max_per_user, inserted.seat_map, events.sale_starts_at, events.sale_ends_at
FROM inserted
JOIN events ON events.id = inserted.event_id
