-- The meeting's participants and speakers, which the provider hands over inline (v2's
-- `bot.completed`, v1's `complete` speakers) rather than at a URL, are made permanent beside the
-- video too (docs/architecture.md §4): the uploader writes each list it was given as
-- `participants.json` / `speakers.json` under the recording's prefix, under its upload lease,
-- and records its key, size and checksum here with the recording's `complete`. Such a row has
-- no `provider_url` (there is none to copy from); its `checksum` is `sha256:` and the object's
-- SHA-256 as S3 holds it (`ChecksumSHA256`, base64), not S3's composite one.
ALTER TABLE recording_artifacts DROP CONSTRAINT IF EXISTS recording_artifacts_kind_check;
ALTER TABLE recording_artifacts ADD CONSTRAINT recording_artifacts_kind_check
    CHECK (kind IN ('transcription', 'raw_transcription', 'diarization', 'chat_messages',
                    'participants', 'speakers'));
