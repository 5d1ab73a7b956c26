"""Purging one recording's prefix (`deletion.purge_prefix`) against the stack's S3, when another
writer or purger acts between the listing and the delete: the deletion and the uploader (an
attempt that lost its lease to it, or a later event about the recording) purge the same prefix
at once, and the uploader may complete or abort its multipart upload meanwhile. What is gone by
the time the purge reaches it counts as deleted, never as an error."""

from __future__ import annotations

import uuid
from typing import Any

from notetaker.common.deletion import purge_prefix
from notetaker.common.s3 import S3Client, recording_prefix
from notetaker.devstack.stack import Stack


class ListThenRace:
    """The stack's S3; right after the first listing of unfinished uploads, `race` runs (another
    purger aborting them) before the listing is answered."""

    def __init__(self, s3: S3Client, bucket: str) -> None:
        self.s3, self.bucket, self.raced = s3, bucket, False

    def __getattr__(self, name: str) -> Any:
        return getattr(self.s3, name)

    async def list_multipart_uploads(self, **kwargs: Any) -> Any:
        page = await self.s3.list_multipart_uploads(**kwargs)
        if not self.raced:
            self.raced = True
            for upload in page.get("Uploads", []):
                await self.s3.abort_multipart_upload(
                    Bucket=self.bucket, Key=upload["Key"], UploadId=upload["UploadId"]
                )
        return page


async def test_an_upload_aborted_by_another_purger_after_the_listing_is_not_an_error(
    stack: Stack, s3: S3Client
) -> None:
    bucket = stack.s3_bucket
    prefix = recording_prefix(uuid.uuid4(), uuid.uuid4(), uuid.uuid4())
    key = f"{prefix}video.mp4"
    upload = await s3.create_multipart_upload(Bucket=bucket, Key=key)
    await s3.upload_part(
        Bucket=bucket, Key=key, UploadId=upload["UploadId"], PartNumber=1, Body=b"x" * 1024
    )
    await s3.put_object(Bucket=bucket, Key=f"{prefix}thumbnail.jpg", Body=b"jpeg")
    racing = ListThenRace(s3, bucket)

    purged = await purge_prefix(racing, bucket, prefix)  # type: ignore[arg-type]

    assert racing.raced
    assert purged.keys == [f"{prefix}thumbnail.jpg"]
    assert (await s3.list_objects_v2(Bucket=bucket, Prefix=prefix)).get("Contents", []) == []
    uploads = await s3.list_multipart_uploads(Bucket=bucket, Prefix=prefix)
    assert uploads.get("Uploads", []) == []
