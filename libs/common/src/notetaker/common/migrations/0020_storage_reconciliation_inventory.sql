-- Reconciliation from S3 Inventory reports (docs/architecture.md §8): where the bucket's
-- inventory configuration delivers CSV reports, a run reads the newest one (a few requests
-- whatever the number of objects) instead of listing the bucket; it records the report's
-- manifest.json key, and its `listed_at` is the report's creation time.
ALTER TABLE storage_reconciliations DROP CONSTRAINT storage_reconciliations_source_check;
ALTER TABLE storage_reconciliations
    ADD CONSTRAINT storage_reconciliations_source_check
        CHECK (source IN ('list', 'inventory')),
    ADD COLUMN manifest_key text,
    ADD CONSTRAINT storage_reconciliations_manifest_of_inventory
        CHECK ((source = 'inventory') = (manifest_key IS NOT NULL));

-- Per org, what the usage events applied since the listing began changed that the listing
-- cannot show (uploads it did not find: +, deletions of what it found: -): a report a day old
-- misses a day of them. `s3_bytes` includes it.
ALTER TABLE storage_reconciliation_orgs
    ADD COLUMN since_listing_bytes bigint NOT NULL DEFAULT 0;

-- A report is read by one run: the next runs look its manifest up.
CREATE INDEX storage_reconciliations_manifest ON storage_reconciliations (manifest_key)
    WHERE manifest_key IS NOT NULL;
