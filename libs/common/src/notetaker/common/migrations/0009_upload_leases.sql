-- One worker per recording (docs/architecture.md §4, §5): an upload holds a lease on its
-- recordings row. `upload_lease_token` is the fencing token: every take adds one, and every
-- ledger write, status write and S3 step that cannot be undone (complete, abort) is made only by
-- the worker holding the current token. `upload_lease_expires_at` is renewed while the copy runs;
-- an `uploading` row whose lease has run out (or has none: rows from before this migration) is
-- requested again by the scheduler's retry sweep, which takes the token away from whoever held it.
ALTER TABLE recordings
    ADD COLUMN upload_lease_token      bigint NOT NULL DEFAULT 0,
    ADD COLUMN upload_lease_holder     text,
    ADD COLUMN upload_lease_expires_at timestamptz;

CREATE INDEX recordings_lease_expiry ON recordings (upload_lease_expires_at)
    WHERE s3_upload_status = 'uploading';
