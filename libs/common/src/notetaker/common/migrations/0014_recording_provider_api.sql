-- Which MeetingBaaS API delivered a recording (docs/architecture.md §4): the uploader asks the same
-- one for fresh URLs when the ones kept have expired (v2 `GET /v2/bots/{bot_id}`, v1
-- `GET /bots/meeting_data`). Set from `recording.completed` with the URLs. Rows from before are
-- v2 unless ingest stored a v1 `complete` delivery for their bot.
ALTER TABLE recordings
    ADD COLUMN IF NOT EXISTS provider_api text NOT NULL DEFAULT 'v2'
        CHECK (provider_api IN ('v1', 'v2'));

UPDATE recordings r SET provider_api = 'v1'
WHERE EXISTS (
    SELECT 1 FROM webhook_deliveries d
    WHERE d.provider = 'meetingbaas' AND d.event_type = 'complete' AND d.bot_id = r.bot_id
);
