-- Workers share a topic's partitions by themselves (WORKER_PARTITIONS=shared): each live
-- worker heartbeats a member row, the live members split the partitions in a fixed order,
-- and a partition is consumed only under its lease. Every takeover raises the epoch, and
-- a batch's offset moves only while its worker's (owner, epoch) still holds the lease.
CREATE TABLE worker_members (
    topic      TEXT        NOT NULL,
    member     TEXT        NOT NULL,
    expires_at TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (topic, member)
);

CREATE TABLE partition_leases (
    topic      TEXT        NOT NULL,
    partition  INTEGER     NOT NULL CHECK (partition >= 0),
    owner      TEXT        NOT NULL,
    epoch      BIGINT      NOT NULL CHECK (epoch > 0),
    expires_at TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (topic, partition)
);
