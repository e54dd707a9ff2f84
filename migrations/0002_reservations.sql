-- Reservations as the event pipeline records them. The worker is the only writer:
-- it applies each Kafka batch in one transaction together with the partition's next
-- offset, so every event takes effect exactly once.

-- One row per reservation, at its latest status. Status only moves forward:
-- held -> confirmed | cancelled | expired, and nothing after those.
-- No foreign key to ticket_categories: the pipeline must never stall on a row it
-- cannot insert; `worker reconcile` checks the sums against Redis instead.
CREATE TABLE reservations (
    id            UUID        PRIMARY KEY,
    user_id       TEXT        NOT NULL,
    event_id      BIGINT      NOT NULL,
    category_id   BIGINT      NOT NULL,
    quantity      BIGINT      NOT NULL CHECK (quantity > 0),
    amount        BIGINT      NOT NULL CHECK (amount >= 0),
    currency      TEXT        NOT NULL,
    status        TEXT        NOT NULL CHECK (status IN ('held', 'confirmed', 'cancelled', 'expired')),
    created_at    TIMESTAMPTZ NOT NULL,
    expires_at    TIMESTAMPTZ NOT NULL,
    confirmed_at  TIMESTAMPTZ,
    payment_id    TEXT,
    cancelled_at  TIMESTAMPTZ,
    expired_at    TIMESTAMPTZ,
    -- The event that set the current status, and when it happened (Redis time).
    last_event_id UUID        NOT NULL,
    last_event_at TIMESTAMPTZ NOT NULL,
    -- When the worker wrote the row (database time).
    updated_at    TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- GET /reservations: a user's reservations, newest first.
CREATE INDEX reservations_by_user ON reservations (user_id, created_at DESC, id DESC);
-- worker reconcile: sums per category and status.
CREATE INDEX reservations_by_category ON reservations (category_id, status);

-- Every event once, in the form it was published. Unique on the event id, which a
-- redelivered copy keeps.
CREATE TABLE reservation_events (
    id              UUID        PRIMARY KEY,
    reservation_id  UUID        NOT NULL,
    type            TEXT        NOT NULL CHECK (type IN ('reserved', 'confirmed', 'cancelled', 'expired')),
    occurred_at     TIMESTAMPTZ NOT NULL,
    payload         JSONB       NOT NULL,
    -- Where the first copy was read.
    kafka_partition INTEGER     NOT NULL,
    kafka_offset    BIGINT      NOT NULL,
    recorded_at     TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE INDEX reservation_events_by_reservation ON reservation_events (reservation_id, occurred_at);

-- The next offset to read per topic partition, committed with the rows it covers.
-- check_offset/check_fingerprint identify the first record of the last applied batch
-- (a record-batch boundary), so a worker notices when the partition's log was replaced
-- (a broker with memory storage restarted) instead of skipping the new log's first records.
CREATE TABLE consumer_offsets (
    topic             TEXT        NOT NULL,
    partition         INTEGER     NOT NULL CHECK (partition >= 0),
    next_offset       BIGINT      NOT NULL CHECK (next_offset >= 0),
    check_offset      BIGINT,
    check_fingerprint BIGINT,
    updated_at        TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (topic, partition)
);
