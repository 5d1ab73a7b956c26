-- Events a consumer kept failing on transiently (past its retry bound): parked here with their
-- error so the partition moves on, and retried from here until they succeed, turn out permanent
-- (then dead-lettered) or an operator deletes them. One row per consumed record.
CREATE TABLE parked_events (
    consumer_group   text NOT NULL,
    topic            text NOT NULL,
    "partition"      integer NOT NULL,
    "offset"         bigint NOT NULL,
    key              bytea,
    value            bytea NOT NULL,
    header_names     text[] NOT NULL,
    header_values    bytea[] NOT NULL,
    error            text NOT NULL,
    attempts         integer NOT NULL DEFAULT 1,
    parked_at        timestamptz NOT NULL DEFAULT now(),
    next_attempt_at  timestamptz NOT NULL,
    PRIMARY KEY (consumer_group, topic, "partition", "offset")
);
CREATE INDEX parked_events_due ON parked_events (consumer_group, next_attempt_at);
