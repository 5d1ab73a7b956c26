-- Digests of the parts of in-progress multipart uploads, so an attempt that dies can be resumed
-- with an end-to-end checksum (S3's composite SHA-256 needs every part's digest).
CREATE TABLE upload_parts (
    upload_id    text NOT NULL,
    part_number  integer NOT NULL CHECK (part_number BETWEEN 1 AND 10000),
    size         bigint NOT NULL,
    sha256       bytea NOT NULL,
    recorded_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (upload_id, part_number)
);
