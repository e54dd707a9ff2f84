SELECT id, name, venue, starts_at, sale_starts_at, sale_ends_at, created_at
FROM events
WHERE id = $1
