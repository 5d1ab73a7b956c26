-- A Gladia job's intent is durable with the video it is owed for: transcript-sync writes the
-- bot's transcription_jobs row in the same transaction as the meeting's video, then submits the
-- job. `submitted_at` is when a submit was first tried: NULL means only the intent exists (no
-- request can have reached the provider, so the submit needs no look-up first). Rows from before
-- this migration were written just before their submit: they count as tried.
ALTER TABLE transcription_jobs ADD COLUMN submitted_at timestamptz;
UPDATE transcription_jobs SET submitted_at = requested_at;
