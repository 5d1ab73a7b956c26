-- The raw body of every accepted webhook (`webhook_bodies`), so a delivery can be inspected
-- (`notetaker webhooks show BOT_ID --body DELIVERY_ID`) and re-applied exactly as received
-- (`notetaker webhooks reapply DELIVERY_ID`).
--
-- Written by ingest in the transaction that records its `webhook_deliveries` row (the delivery's
-- own id, not its `fact:` id), so a body is kept if and only if the delivery was accepted; a
-- delivery for a bot whose media was deleted keeps none. `sealed` is the exact bytes received,
-- zlib-compressed then encrypted with the key ring of NOTETAKER_SOURCE_URL_KEYS (Fernet, as the
-- provider URLs); `headers` holds what re-applying needs besides the body (the Svix id, Gladia's
-- request id), never a signature, secret, API key or token. The scheduler deletes bodies older
-- than NOTETAKER_WEBHOOK_BODY_RETENTION_DAYS (30), and a deletion of the bot's media deletes its
-- bodies at once.
CREATE TABLE webhook_bodies (
    provider     text        NOT NULL,
    delivery_id  text        NOT NULL,
    bot_id       text,
    event_type   text        NOT NULL,
    headers      jsonb       NOT NULL DEFAULT '{}',
    sealed       bytea       NOT NULL,
    size_bytes   integer     NOT NULL,
    received_at  timestamptz NOT NULL,
    PRIMARY KEY (provider, delivery_id),
    FOREIGN KEY (provider, delivery_id) REFERENCES webhook_deliveries ON DELETE CASCADE
);
CREATE INDEX webhook_bodies_bot ON webhook_bodies (bot_id);
CREATE INDEX webhook_bodies_age ON webhook_bodies (received_at);
