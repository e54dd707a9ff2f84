-- category_totals: held and confirmed reservations and tickets per category.
-- $1 category ids
SELECT category_id,
       count(*) FILTER (WHERE status = 'held') AS held_reservations,
       coalesce(sum(quantity) FILTER (WHERE status = 'held'), 0)::int8 AS held_tickets,
       count(*) FILTER (WHERE status = 'confirmed') AS confirmed_reservations,
       coalesce(sum(quantity) FILTER (WHERE status = 'confirmed'), 0)::int8 AS confirmed_tickets
FROM reservations
WHERE category_id = ANY($1::int8[]) AND status IN ('held', 'confirmed')
GROUP BY category_id
