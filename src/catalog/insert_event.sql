INSERT INTO events (name, venue, starts_at, sale_starts_at, sale_ends_at)
VALUES ($1, $2, $3, $4, $5)
RETURNING id, name, venue, starts_at, sale_starts_at, sale_ends_at, created_at
