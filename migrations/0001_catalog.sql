-- Events and their ticket categories. Stock levels live in Redis; these rows are the
-- source of truth for what is on sale and at what terms.

CREATE TABLE events (
    id             BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name           TEXT        NOT NULL CHECK (char_length(name) BETWEEN 1 AND 200),
    venue          TEXT        NOT NULL CHECK (char_length(venue) BETWEEN 1 AND 200),
    starts_at      TIMESTAMPTZ NOT NULL,
    sale_starts_at TIMESTAMPTZ,
    sale_ends_at   TIMESTAMPTZ,
    created_at     TIMESTAMPTZ NOT NULL DEFAULT now(),
    CONSTRAINT events_sale_window_ordered
        CHECK (sale_starts_at IS NULL OR sale_ends_at IS NULL OR sale_ends_at > sale_starts_at)
);

CREATE TABLE ticket_categories (
    -- Reservation ids embed the category id in 32 bits.
    id                   BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY CHECK (id < 4294967296),
    event_id             BIGINT      NOT NULL REFERENCES events (id) ON DELETE RESTRICT,
    name                 TEXT        NOT NULL CHECK (char_length(name) BETWEEN 1 AND 100),
    price                BIGINT      NOT NULL CHECK (price >= 0),
    currency             TEXT        NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
    quota                BIGINT      NOT NULL CHECK (quota BETWEEN 1 AND 10000000),
    max_per_user         BIGINT      NOT NULL CHECK (max_per_user BETWEEN 1 AND quota),
    -- NULL until the Redis stock exists; see the provisioning notes in src/catalog.rs.
    stock_provisioned_at TIMESTAMPTZ,
    created_at           TIMESTAMPTZ NOT NULL DEFAULT now(),
    CONSTRAINT ticket_categories_name_unique_per_event UNIQUE (event_id, name)
);

CREATE INDEX ticket_categories_unprovisioned
    ON ticket_categories (id) WHERE stock_provisioned_at IS NULL;
