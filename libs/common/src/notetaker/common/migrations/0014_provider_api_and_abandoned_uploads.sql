-- 1. Which MeetingBaaS API delivered a recording (docs/architecture.md §4): the uploader asks
-- the same one for fresh URLs when the ones kept have expired (v2 `GET /v2/bots/{bot_id}`, v1
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

-- 2. Multipart uploads given up (docs/architecture.md §5, Uploads). S3 cannot fence an abort by
-- the upload lease's token, so an upload is recorded here first, by the worker holding the lease
-- (the insert is fenced like every ledger write), and only then aborted; no copy resumes an
-- upload recorded here. An abort that reaches S3 after its worker lost the lease thus only ever
-- ends an upload nobody writes to. Rows stay (one per upload given up) as the record of why a
-- listed upload was not resumed.
CREATE TABLE IF NOT EXISTS abandoned_uploads (
    upload_id     text PRIMARY KEY,
    recording_id  uuid NOT NULL REFERENCES recordings (id) ON DELETE CASCADE,
    lease_token   bigint NOT NULL,
    abandoned_at  timestamptz NOT NULL DEFAULT now()
);
