-- Transcription jobs we asked a provider for, so the scheduler can poll the ones whose callback
-- never came.
CREATE TABLE transcription_jobs (
    bot_id        text PRIMARY KEY,
    provider      text NOT NULL,
    job_id        text NOT NULL,
    requested_at  timestamptz NOT NULL DEFAULT now(),
    polled_at     timestamptz,
    poll_count    integer NOT NULL DEFAULT 0,
    completed_at  timestamptz,
    status        text NOT NULL DEFAULT 'requested'
);
CREATE INDEX transcription_jobs_open ON transcription_jobs (requested_at) WHERE completed_at IS NULL;
