-- Which transcript a meeting's row holds (provider and job id, URL or size: transcript-sync's
-- `transcript_id`). transcript-sync keeps a meeting's join state only until the meeting is
-- complete, then deletes it (a tombstone on its changelog, which Kafka compacts away); an event
-- that comes later is decided from the durable rows, and this column lets it see that the
-- transcript it carries is the one already written. Rows written before it have NULL here.
ALTER TABLE meetings ADD COLUMN transcript_ref text;
