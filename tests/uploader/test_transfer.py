"""Streaming a source into S3 through multipart upload, against a real HTTP source and S3."""

from __future__ import annotations

import hashlib
import os
from collections.abc import AsyncIterator

import httpx
import pytest

from notetaker.common.s3 import S3Client
from notetaker.devstack.sources import Fault, RecordingSource
from notetaker.devstack.stack import Stack
from notetaker.uploader.transfer import SourceError, stream_to_s3

MIB = 1024 * 1024


@pytest.fixture
async def source() -> AsyncIterator[RecordingSource]:
    src = RecordingSource()
    await src.start()
    yield src
    await src.stop()


async def copy(stack: Stack, s3: S3Client, url: str, key: str) -> object:
    async with httpx.AsyncClient(timeout=10) as http:
        return await stream_to_s3(
            http,
            s3,
            url=url,
            bucket=stack.s3_bucket,
            key=key,
            content_type="video/mp4",
            part_size=5 * MIB,
            parts_in_flight=2,
        )


async def open_uploads(stack: Stack, s3: S3Client, key: str) -> list[object]:
    listing = await s3.list_multipart_uploads(Bucket=stack.s3_bucket, Prefix=key)
    return list(listing.get("Uploads", []))


async def test_multipart_copy_stores_the_exact_bytes(
    stack: Stack, s3: S3Client, source: RecordingSource
) -> None:
    data = os.urandom(12 * MIB + 12345)  # three parts, the last one short
    source.files["big.mp4"] = data
    stored = await copy(stack, s3, source.url("big.mp4"), "t/big.mp4")
    obj = await s3.get_object(Bucket=stack.s3_bucket, Key="t/big.mp4")
    body = await obj["Body"].read()
    assert body == data
    assert stored.parts == 3  # type: ignore[attr-defined]
    assert stored.sha256 == hashlib.sha256(data).hexdigest()  # type: ignore[attr-defined]
    assert obj["ServerSideEncryption"] == "AES256"


async def test_truncated_source_fails_and_leaves_no_upload(
    stack: Stack, s3: S3Client, source: RecordingSource
) -> None:
    source.files["cut.mp4"] = os.urandom(7 * MIB)
    source.faults["cut.mp4"] = Fault(truncate_at=6 * MIB)
    with pytest.raises(SourceError):
        await copy(stack, s3, source.url("cut.mp4"), "t/cut.mp4")
    assert await open_uploads(stack, s3, "t/cut.mp4") == []
    with pytest.raises(s3.exceptions.NoSuchKey):
        await s3.get_object(Bucket=stack.s3_bucket, Key="t/cut.mp4")


@pytest.mark.parametrize("status", [403, 404, 500])
async def test_error_status_is_a_source_error(
    stack: Stack, s3: S3Client, source: RecordingSource, status: int
) -> None:
    source.files["x.mp4"] = b"data"
    source.faults["x.mp4"] = Fault(status=status)
    with pytest.raises(SourceError, match=f"HTTP {status}"):
        await copy(stack, s3, source.url("x.mp4"), "t/x.mp4")
    assert await open_uploads(stack, s3, "t/x.mp4") == []
