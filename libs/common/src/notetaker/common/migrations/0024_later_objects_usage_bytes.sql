-- The bytes the `usage_step` event of a later object's row moves the stored level by (its size
-- less the size of the object it replaced; `later_objects.py`): until that event is applied, the
-- level counts the row's size less this, which reconciliation needs to tell an object in flight
-- (a regenerated thumbnail whose event is not applied yet) from drift.
ALTER TABLE recording_artifacts ADD COLUMN IF NOT EXISTS usage_bytes bigint;
