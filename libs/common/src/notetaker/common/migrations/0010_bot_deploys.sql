-- Deploying a meeting's bot, one row per meeting the scheduler has tried (docs/architecture.md §6).
--
-- The row is the meeting's reservation: it is written, and committed, before MeetingBaaS is asked
-- for a bot. `create_calls` counts the create-bot requests sent for the meeting; once it is above
-- zero, the next try first asks MeetingBaaS for a bot carrying this meeting id (the create
-- request's `extra`) and links that one instead of deploying another. `next_attempt_at` is when
-- the meeting may be tried again: after a failure, its backoff; while a request may be in flight,
-- the time by which it has surely ended. `bot_id` is set in the transaction that links the bot.
CREATE TABLE bot_deploys (
    meeting_id        uuid        PRIMARY KEY REFERENCES meetings (id) ON DELETE CASCADE,
    attempts          integer     NOT NULL DEFAULT 0,  -- failed tries
    create_calls      integer     NOT NULL DEFAULT 0,
    last_error        text,
    last_attempt_at   timestamptz,
    next_attempt_at   timestamptz,
    reserved_at       timestamptz,
    bot_id            text,
    linked_at         timestamptz,
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX bot_deploys_waiting ON bot_deploys (next_attempt_at) WHERE bot_id IS NULL;
