-- Reconciliation of the stored level with S3 (docs/architecture.md §8): the metrics service lists
-- the recordings prefix on a schedule, compares each org's bytes in S3 with its stored level, and
-- corrects the level where a drift persists across two consecutive runs.
--
-- One row per run, keyed by its slot (the start of the schedule's interval it belongs to, or the
-- time of a run asked for by hand): a replica that finds the slot recorded does nothing, so
-- several replicas reconcile once. The row is written in the transaction that makes the run's
-- corrections, so a correction is never made twice nor without its record.
CREATE TABLE storage_reconciliations (
    slot                timestamptz PRIMARY KEY,
    source              text        NOT NULL CHECK (source IN ('list')),
    requested_by        text        NOT NULL,
    listed_at           timestamptz NOT NULL,  -- when the listing began
    finished_at         timestamptz NOT NULL DEFAULT now(),
    list_requests       integer     NOT NULL,  -- ListObjectsV2 pages read
    objects_listed      bigint      NOT NULL,
    bytes_listed        bigint      NOT NULL,
    level_bytes         bigint      NOT NULL,  -- every org's stored level, summed, before
    s3_bytes            bigint      NOT NULL,  -- what the levels should be, from S3 (see orgs)
    drift_bytes         bigint      NOT NULL,  -- s3_bytes - level_bytes
    corrected_bytes     bigint      NOT NULL,  -- added to the levels (negative: taken off)
    orgs_drifting       integer     NOT NULL,
    recordings_expired  integer     NOT NULL   -- found gone from S3, marked media_expired
);

-- Per run, one row per org whose S3 bytes and level differ, whose level was corrected, or whose
-- recordings were found gone: the absent orgs of a run had no drift. `s3_bytes` is the bytes
-- listed under the org's prefix, less the objects of uploads whose usage event is not applied
-- yet (`in_flight_bytes`), plus the bytes of deletions whose usage event is not applied yet
-- (`pending_deletion_bytes`): what the level will be once those events land.
CREATE TABLE storage_reconciliation_orgs (
    slot                    timestamptz NOT NULL REFERENCES storage_reconciliations (slot)
                                        ON DELETE CASCADE,
    org_id                  uuid        NOT NULL,
    level_bytes             bigint      NOT NULL,
    listed_bytes            bigint      NOT NULL,
    in_flight_bytes         bigint      NOT NULL,
    pending_deletion_bytes  bigint      NOT NULL,
    s3_bytes                bigint      NOT NULL,
    drift_bytes             bigint      NOT NULL,  -- s3_bytes - level_bytes, as found
    corrected_bytes         bigint      NOT NULL,  -- the part of it that persisted, corrected
    expired_recordings      uuid[]      NOT NULL DEFAULT '{}',
    PRIMARY KEY (slot, org_id)
);
CREATE INDEX storage_reconciliation_orgs_org ON storage_reconciliation_orgs (org_id, slot);
