-- Reserved seating (see src/seating.rs).
--
-- A seated category keeps its seat map as JSON text (`[{"row": "A", "seats": 20}, ...]`,
-- validated by the api); its quota is the number of seats. NULL for counted categories.
ALTER TABLE ticket_categories ADD COLUMN seat_map TEXT;

-- The seats of each reservation, as the worker records them from the events. `position`
-- keeps the reservation's order (rows in map order, then by number). A seat of a
-- category is confirmed at most once: the partial unique index refuses a second
-- confirmed reservation of the same seat (the worker would dead-letter it).
CREATE TABLE reservation_seats (
    reservation_id UUID    NOT NULL,
    category_id    BIGINT  NOT NULL,
    seat           TEXT    NOT NULL CHECK (char_length(seat) BETWEEN 3 AND 13),
    position       INTEGER NOT NULL CHECK (position >= 0),
    confirmed      BOOLEAN NOT NULL DEFAULT false,
    PRIMARY KEY (reservation_id, seat)
);

CREATE UNIQUE INDEX reservation_seats_sold_once ON reservation_seats (category_id, seat) WHERE confirmed;
