-- confirmed_seats: the seats Postgres shows as sold in a seated category.
-- $1 category id
SELECT seat FROM reservation_seats WHERE category_id = $1 AND confirmed
