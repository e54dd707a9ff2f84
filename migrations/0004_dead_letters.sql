-- Records the worker will never apply: undecodable, or refused by Postgres for their
-- data (SQLSTATE class 22 or 23, e.g. a NUL byte in a text). The worker writes them in
-- the transaction that moves the partition's offset past them, so a poison record
-- neither stops its partition nor disappears. docs/operations.md ("Dead letters")
-- explains how to inspect and replay them.
CREATE TABLE dead_letters (
    id              BIGINT      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    topic           TEXT        NOT NULL,
    kafka_partition INTEGER     NOT NULL,
    kafka_offset    BIGINT      NOT NULL,
    -- The record as published (the key is the reservation id as text).
    key             BYTEA,
    value           BYTEA,
    error           TEXT        NOT NULL,
    recorded_at     TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- A log replaced after a broker restart reuses offsets, so a position is not unique.
CREATE INDEX dead_letters_by_position ON dead_letters (topic, kafka_partition, kafka_offset);
