-- Dead letters replayed to their original topic by `notetaker dead-letters replay`, one row per
-- dead letter: what makes a replay happen once. The row is inserted in the transaction that
-- publishes the record and commits only once Kafka acknowledged it; an unacknowledged publish
-- deletes it again, and a crash rolls it back. So a row means "published and acknowledged", and a
-- second replay (or two operators at once: the second waits on the first's row) skips it. A
-- dead letter is its position on the .dlq topic plus the record's timestamp, so a .dlq topic
-- deleted and created again (its offsets start over) is not taken for one already replayed.
CREATE TABLE dead_letter_replays (
    dlq_topic        text        NOT NULL,
    dlq_partition    integer     NOT NULL,
    dlq_offset       bigint      NOT NULL,
    dlq_timestamp_ms bigint      NOT NULL,
    event_id         text,
    bot_id           text,
    target_topic     text        NOT NULL,
    target_partition integer,
    target_offset    bigint,
    replayed_by      text        NOT NULL DEFAULT '',
    replayed_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (dlq_topic, dlq_partition, dlq_offset, dlq_timestamp_ms)
);
