-- Why a transcription job failed (issue 18): Gladia's `transcription.error` callback gives
-- `error.code` (an HTTP-like status) and `error.message`, which ingest keeps on the job's row;
-- a job the scheduler's poller finds in `error` keeps the result's `error_code`. NULL: the job
-- did not fail, or failed before this migration.
ALTER TABLE transcription_jobs
    ADD COLUMN IF NOT EXISTS error_code text,
    ADD COLUMN IF NOT EXISTS error_message text;
