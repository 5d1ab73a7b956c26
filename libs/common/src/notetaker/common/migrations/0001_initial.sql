-- Recordings, unified meetings, storage cost and webhook deliveries (docs/architecture.md §4).

CREATE TYPE s3_upload_status AS ENUM ('pending', 'uploading', 'complete', 'failed');
CREATE TYPE usage_metric_type AS ENUM ('storage_gb', 'upload_gb', 'download_gb', 'api_requests');
CREATE TYPE meeting_source AS ENUM ('fathom', 'notetaker');

-- The unified table Fathom and 60 Notetaker both write. A calendar row exists before its bot does;
-- transcript-sync fills the media columns of notetaker rows only.
CREATE TABLE meetings (
    id                  uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    org_id              uuid NOT NULL,
    owner_user_id       uuid NOT NULL,
    title               text NOT NULL DEFAULT '',
    start_time          timestamptz NOT NULL,
    meeting_url         text,
    source              meeting_source NOT NULL,
    bot_id              text UNIQUE,
    video_url           text,
    audio_url           text,
    transcript_text     text,
    transcript_json     jsonb,
    transcript_provider text,
    thumbnail_url       text,
    recording_status    text,
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX meetings_start_without_bot ON meetings (start_time) WHERE bot_id IS NULL;

CREATE TABLE recordings (
    id                          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    org_id                      uuid NOT NULL,
    user_id                     uuid NOT NULL,
    meeting_id                  uuid REFERENCES meetings (id),
    bot_id                      text NOT NULL UNIQUE,
    provider_video_url          text,
    provider_audio_url          text,
    provider_urls_received_at   timestamptz,
    provider_transcript         boolean NOT NULL DEFAULT false,
    s3_upload_status            s3_upload_status NOT NULL DEFAULT 'pending',
    s3_video_key                text,
    s3_audio_key                text,
    s3_file_size_bytes          bigint,
    s3_checksum                 text,
    s3_upload_retry_count       integer NOT NULL DEFAULT 0,
    s3_upload_last_retry_at     timestamptz,
    s3_upload_next_retry_at     timestamptz,
    s3_upload_error_message     text,
    created_at                  timestamptz NOT NULL DEFAULT now(),
    updated_at                  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX recordings_retry_due ON recordings (s3_upload_next_retry_at)
    WHERE s3_upload_status = 'failed' AND s3_upload_next_retry_at IS NOT NULL;

CREATE TABLE s3_usage_metrics (
    org_id       uuid NOT NULL,
    date         date NOT NULL,
    metric_type  usage_metric_type NOT NULL,
    value        double precision NOT NULL DEFAULT 0,
    cost_usd     numeric(14, 6) NOT NULL DEFAULT 0,
    updated_at   timestamptz NOT NULL DEFAULT now(),
    UNIQUE (org_id, date, metric_type)
);

-- Each usage event counted once, whatever Kafka redelivers.
CREATE TABLE usage_events_applied (
    event_id     text PRIMARY KEY,
    applied_at   timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE webhook_deliveries (
    provider     text NOT NULL,
    delivery_id  text NOT NULL,
    event_type   text NOT NULL,
    bot_id       text,
    received_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (provider, delivery_id)
);
