-- Objects written under a recording's prefix after its upload, each by its own producer: the
-- thumbnail (the uploader's thumbnailer) and Gladia's result as delivered (transcript-sync).
-- Each is recorded here like the artifacts the upload copies, and counted in the stored level by
-- its own `storage.usage` event, whose step is kept in `usage_step` (`later_objects.py`): the
-- deletion path takes off what these rows hold, and reconciliation knows whether the object's
-- event is applied yet (in flight) from it.
ALTER TABLE recording_artifacts DROP CONSTRAINT IF EXISTS recording_artifacts_kind_check;
ALTER TABLE recording_artifacts ADD CONSTRAINT recording_artifacts_kind_check
    CHECK (kind IN ('transcription', 'raw_transcription', 'diarization', 'chat_messages',
                    'participants', 'speakers', 'thumbnail', 'gladia_result'));
ALTER TABLE recording_artifacts ADD COLUMN IF NOT EXISTS usage_step text;
