-- A Gladia submit whose answer never came (timed out, cut, the worker killed during the POST) may
-- still become a job that Gladia lists only later: `unanswered_at` is set when a submit starts and
-- cleared once Gladia answers it (its job id, or a refusal). A retry that does not find the job
-- by our request id waits until the last unanswered submit is `gladia_submit_settle_seconds` old
-- before it submits again, so a slow job creation is not doubled.
ALTER TABLE transcription_jobs ADD COLUMN unanswered_at timestamptz;
