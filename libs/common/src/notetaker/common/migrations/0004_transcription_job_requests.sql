-- A transcription job is ours before it is the provider's: transcript-sync writes the row under a
-- request id of its own before it submits the job (the id and the callback token's expiry go in
-- the callback URL), then stores the provider's job id once the provider answers. Ingest accepts
-- a Gladia callback only for a request id that has a row, and only for that row's job id once it
-- is known. One row per bot still (a new request replaces the bot's row, and with it the request
-- id an older callback names). Jobs asked for before this migration keep their job id and get a
-- request id no callback names: their callbacks are refused, and the scheduler polls them.
ALTER TABLE transcription_jobs
    ADD COLUMN request_id uuid NOT NULL DEFAULT gen_random_uuid(),
    ADD COLUMN token_expires_at timestamptz,
    ALTER COLUMN job_id DROP NOT NULL;
ALTER TABLE transcription_jobs DROP CONSTRAINT transcription_jobs_pkey;
ALTER TABLE transcription_jobs ADD PRIMARY KEY (request_id);
ALTER TABLE transcription_jobs ADD CONSTRAINT transcription_jobs_bot_id_key UNIQUE (bot_id);
