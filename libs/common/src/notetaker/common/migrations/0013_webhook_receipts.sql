-- Whether a webhook arrived, and what became of it (`notetaker webhooks show BOT_ID`).
--
-- An accepted delivery is a `webhook_deliveries` row already; it now says what ingest did with
-- it: `published` (its events are on Kafka), `ignored` (nothing to publish) or `deleted` (the
-- bot's media was deleted: acknowledged, nothing published). Rows from before are NULL.
ALTER TABLE webhook_deliveries ADD COLUMN outcome text;
CREATE INDEX webhook_deliveries_bot ON webhook_deliveries (bot_id, received_at);

-- Every other delivery ingest answered, when it can tell which bot it is about: a duplicate
-- (acknowledged, nothing published again) or a refusal (401, 404, 413, 415, 422, 503) with its
-- reason code. Written after the answer is decided, never holding it up; the bot id of a refused
-- delivery is what its body claims (checked to look like a bot id, not trusted). The scheduler
-- deletes rows older than 30 days, so refusals from strangers cannot pile up.
CREATE TABLE webhook_receipts (
    id           bigserial   PRIMARY KEY,
    provider     text        NOT NULL,
    delivery_id  text,
    bot_id       text        NOT NULL,
    event_type   text,
    status       integer     NOT NULL,
    outcome      text        NOT NULL,
    received_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX webhook_receipts_bot ON webhook_receipts (bot_id, received_at);
CREATE INDEX webhook_receipts_age ON webhook_receipts (received_at);
