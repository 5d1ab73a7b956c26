-- Every artifact a provider hands over beside the video (docs/architecture.md §4): the transcript
-- JSON as delivered, the raw transcription, the diarization, the chat. Its URL expires with the
-- video's, so the uploader copies it into the recording's prefix in the same attempt, with the
-- same streaming, verified, resumable copy, and records here where it went. One row per recording
-- and kind: written (with the provider's URL, sealed like the video's) when `recording.completed`
-- arrives; `s3_key`, `size_bytes`, `checksum` and `stored_at` set with the recording's
-- `complete`, under its upload lease (or `error`, for one that could not be had). The deletion
-- path clears the URL and the key.
CREATE TABLE IF NOT EXISTS recording_artifacts (
    recording_id  uuid        NOT NULL REFERENCES recordings (id) ON DELETE CASCADE,
    kind          text        NOT NULL
        CHECK (kind IN ('transcription', 'raw_transcription', 'diarization', 'chat_messages')),
    provider_url  text,
    s3_key        text,
    size_bytes    bigint,
    checksum      text,
    stored_at     timestamptz,
    -- Why the artifact is not stored, when its source was gone (404) or refused by policy
    -- (where it leads, its size): the recording completes without it rather than lose the video.
    error         text,
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (recording_id, kind)
);

-- What the provider said about the meeting with the recording (`bot.completed`), kept by the
-- uploader for the `recording.uploaded` it announces.
ALTER TABLE recordings
    ADD COLUMN IF NOT EXISTS provider_duration_seconds double precision,
    ADD COLUMN IF NOT EXISTS provider_participants     jsonb,
    ADD COLUMN IF NOT EXISTS provider_speakers         jsonb;

-- The fields the product shows, filled by transcript-sync's join from what was delivered (NULL:
-- no provider gave it): the recording's length, who took part and who spoke (`[{"id", "name"}]`
-- as the provider listed them), the transcript's language, and a summary when the transcript
-- came with one (Gladia's summarization).
ALTER TABLE meetings
    ADD COLUMN IF NOT EXISTS duration_seconds double precision,
    ADD COLUMN IF NOT EXISTS participants     jsonb,
    ADD COLUMN IF NOT EXISTS speakers         jsonb,
    ADD COLUMN IF NOT EXISTS language         text,
    ADD COLUMN IF NOT EXISTS summary          text;
