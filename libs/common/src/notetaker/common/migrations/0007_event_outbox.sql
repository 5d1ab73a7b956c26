-- Events a service must publish because of a change it committed: the record is written in the
-- same transaction as the change, published from here, and marked sent once Kafka acknowledged
-- it. Whoever publishes a row (the handler right after its change, a retry of the event, or the
-- service's sweep of rows left unsent) locks it first, so a row goes out once; a crash between
-- Kafka's acknowledgement and the mark sends the same record (same event id) again. transcript-sync
-- writes `meeting.synced` here with every change to a `meetings` row. Sent rows are kept a week.
CREATE TABLE event_outbox (
    id             bigserial   PRIMARY KEY,
    source         text        NOT NULL,
    topic          text        NOT NULL,
    key            bytea,
    value          bytea       NOT NULL,
    header_names   text[]      NOT NULL,
    header_values  bytea[]     NOT NULL,
    event_id       text        NOT NULL,
    created_at     timestamptz NOT NULL DEFAULT now(),
    sent_at        timestamptz
);
CREATE INDEX event_outbox_unsent ON event_outbox (source, key, id) WHERE sent_at IS NULL;
CREATE INDEX event_outbox_sent ON event_outbox (sent_at) WHERE sent_at IS NOT NULL;
