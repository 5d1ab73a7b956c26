-- Deleting a meeting's media everywhere, and keeping it deleted (docs/architecture.md §4, §13).
--
-- `media_deleted_at` marks a recording (and its meeting) whose media an operator or the retention
-- job deleted. It is set, with the `media_deletions` row, in the transaction that starts the
-- deletion, before any object is touched; from then on every writer refuses the row (the uploader's
-- lease and writes, transcript-sync's meetings writes, ingest's publishing), and a writer that
-- stored something after the mark removes it again. The meetings row itself stays: it is the
-- product's (title, time, owner); its media columns are cleared.
ALTER TABLE recordings ADD COLUMN media_deleted_at timestamptz;
ALTER TABLE meetings ADD COLUMN media_deleted_at timestamptz;

-- One row per deleted recording: who asked, why, what was removed, and which step is done. The
-- row is the deletion's intent (written first) and its log (each step stamps its column when it
-- is done); `completed_at` is set once every step is. A run that died half-way is finished by
-- the next run of `notetaker meetings delete` or by the scheduler, which resumes every row not
-- completed whose `next_attempt_at` has come.
CREATE TABLE media_deletions (
    recording_id        uuid        PRIMARY KEY,
    meeting_id          uuid,
    bot_id              text        NOT NULL,
    org_id              uuid        NOT NULL,
    s3_prefix           text        NOT NULL,
    reason              text        NOT NULL CHECK (reason IN ('operator', 'retention')),
    requested_by        text        NOT NULL,
    requested_at        timestamptz NOT NULL DEFAULT now(),
    -- Bytes the org's stored level counted for this recording (its upload's storage.usage), and
    -- so what the deletion's own storage.usage takes off again.
    stored_bytes        bigint      NOT NULL DEFAULT 0,
    deleted_keys        text[]      NOT NULL DEFAULT '{}',
    objects_deleted     integer     NOT NULL DEFAULT 0,
    bytes_deleted       bigint      NOT NULL DEFAULT 0,
    s3_done_at          timestamptz,
    usage_done_at       timestamptz,
    meetingbaas_outcome text,
    meetingbaas_done_at timestamptz,
    gladia_job_id       text,
    gladia_outcome      text,
    gladia_done_at      timestamptz,
    attempts            integer     NOT NULL DEFAULT 0,
    last_error          text,
    next_attempt_at     timestamptz,
    completed_at        timestamptz
);
CREATE INDEX media_deletions_unfinished ON media_deletions (next_attempt_at)
    WHERE completed_at IS NULL;
CREATE INDEX media_deletions_org ON media_deletions (org_id, requested_at);

-- Media retention per org: an org without a row keeps its media NOTETAKER_MEDIA_RETENTION_DAYS
-- (90 by default). The scheduler deletes what is older through the same path as an operator.
CREATE TABLE org_retention (
    org_id   uuid        PRIMARY KEY,
    days     integer     NOT NULL CHECK (days BETWEEN 1 AND 36500),
    set_by   text        NOT NULL,
    set_at   timestamptz NOT NULL DEFAULT now()
);
-- The retention job's search: recordings not deleted yet, oldest first.
CREATE INDEX recordings_retention ON recordings (created_at) WHERE media_deleted_at IS NULL;
