"""Streaming a source into S3 through multipart upload, against a real HTTP source and S3:
exact bytes, S3's composite checksum, resume after an interrupted attempt, and cleanup."""

from __future__ import annotations

import base64
import hashlib
import os
import uuid

import asyncpg
import pytest

from notetaker.common.s3 import S3Client
from notetaker.common.source_policy import SourcePolicy
from notetaker.devstack.sources import Fault, RecordingSource
from notetaker.devstack.stack import Stack
from notetaker.uploader.lease import LeaseLost, UploadLease
from notetaker.uploader.ledger import PostgresPartLedger
from notetaker.uploader.transfer import (
    IntegrityError,
    PartLedger,
    SourceError,
    StoredObject,
    abort_unfinished,
    source_session,
    stream_to_s3,
)
from notetaker.uploader.upload import failure_reason

MIB = 1024 * 1024

LOOPBACK = SourcePolicy(allow_loopback=True)  # the test sources listen on loopback


@pytest.fixture
async def ledger(db: asyncpg.Pool) -> PartLedger:
    """The ledger of a worker holding the upload lease of a recording of its own."""
    recording_id = await db.fetchval(
        "INSERT INTO recordings (org_id, user_id, bot_id) VALUES ($1, $2, $3) RETURNING id",
        uuid.uuid4(),
        uuid.uuid4(),
        str(uuid.uuid4()),
    )
    lease = await UploadLease.take(db, recording_id, "test", 600)
    assert lease is not None
    return PostgresPartLedger(db, lease)


async def copy(
    stack: Stack, s3: S3Client, url: str, key: str, ledger: PartLedger | None = None
) -> StoredObject:
    async with source_session(10, LOOPBACK) as http:
        return await stream_to_s3(
            http,
            s3,
            url=url,
            bucket=stack.s3_bucket,
            key=key,
            content_type="video/mp4",
            part_size=5 * MIB,
            parts_in_flight=2,
            ledger=ledger,
        )


def composite(data: bytes, part_size: int = 5 * MIB) -> str:
    digests = [
        hashlib.sha256(data[i : i + part_size]).digest() for i in range(0, len(data), part_size)
    ]
    return f"{base64.b64encode(hashlib.sha256(b''.join(digests)).digest()).decode()}-{len(digests)}"


async def open_uploads(stack: Stack, s3: S3Client, key: str) -> list[object]:
    listing = await s3.list_multipart_uploads(Bucket=stack.s3_bucket, Prefix=key)
    return list(listing.get("Uploads", []))


async def stored_bytes(stack: Stack, s3: S3Client, key: str) -> bytes:
    body: bytes = await (await s3.get_object(Bucket=stack.s3_bucket, Key=key))["Body"].read()
    return body


async def test_multipart_copy_stores_the_exact_bytes_with_s3s_checksum(
    stack: Stack, s3: S3Client, source: RecordingSource
) -> None:
    data = os.urandom(12 * MIB + 12345)  # three parts, the last one short
    source.files["big.mp4"] = data
    stored = await copy(stack, s3, source.url("big.mp4"), "t/big.mp4")
    assert await stored_bytes(stack, s3, "t/big.mp4") == data
    assert (stored.parts, stored.size_bytes) == (3, len(data))
    assert stored.checksum == composite(data)
    head = await s3.head_object(Bucket=stack.s3_bucket, Key="t/big.mp4", ChecksumMode="ENABLED")
    assert head["ServerSideEncryption"] == "AES256"
    assert head["ChecksumSHA256"].split("-")[0] == stored.checksum.split("-")[0]


async def test_a_truncated_attempt_is_resumed_from_the_parts_s3_holds(
    stack: Stack, s3: S3Client, source: RecordingSource, ledger: PartLedger, db: asyncpg.Pool
) -> None:
    data = os.urandom(17 * MIB)
    source.files["cut.mp4"] = data
    source.faults["cut.mp4"] = Fault(truncate_at=11 * MIB, times=1)  # connection cut once
    with pytest.raises(SourceError):
        await copy(stack, s3, source.url("cut.mp4"), "t/cut.mp4", ledger)
    with pytest.raises(s3.exceptions.NoSuchKey):  # a short copy is never a recording
        await s3.get_object(Bucket=stack.s3_bucket, Key="t/cut.mp4")
    (upload,) = await open_uploads(stack, s3, "t/cut.mp4")

    stored = await copy(stack, s3, source.url("cut.mp4"), "t/cut.mp4", ledger)
    assert await stored_bytes(stack, s3, "t/cut.mp4") == data
    assert stored.resumed_parts == 2  # 10 MiB of the 11 made whole parts
    assert source.requests[-1] == ("cut.mp4", f"bytes={10 * MIB}-")
    assert stored.checksum == composite(data)
    assert await open_uploads(stack, s3, "t/cut.mp4") == []
    assert (
        await db.fetchval(
            "SELECT count(*) FROM upload_parts WHERE upload_id = $1",
            upload["UploadId"],  # type: ignore[index]
        )
        == 0
    )


async def test_a_part_changed_in_s3_before_the_resume_never_becomes_part_of_the_recording(
    stack: Stack, s3: S3Client, source: RecordingSource, ledger: PartLedger
) -> None:
    """Between a cut attempt and its resume, something else writes part 1 of the unfinished
    upload again: same size, other bytes. The resume keeps parts by size (their digests are in
    the ledger), so only the final check against S3's checksum stands between those bytes and
    the recording: the resumed copy must fail and keep nothing, and the next one start afresh."""
    data = os.urandom(12 * MIB)
    source.files["changed.mp4"] = data
    source.faults["changed.mp4"] = Fault(truncate_at=11 * MIB, times=1)
    with pytest.raises(SourceError):
        await copy(stack, s3, source.url("changed.mp4"), "t/changed.mp4", ledger)
    (upload,) = await open_uploads(stack, s3, "t/changed.mp4")
    other = os.urandom(5 * MIB)
    await s3.upload_part(
        Bucket=stack.s3_bucket,
        Key="t/changed.mp4",
        UploadId=upload["UploadId"],  # type: ignore[index]
        PartNumber=1,
        Body=other,
        ChecksumSHA256=base64.b64encode(hashlib.sha256(other).digest()).decode(),
    )

    with pytest.raises(IntegrityError, match="deleted"):
        await copy(stack, s3, source.url("changed.mp4"), "t/changed.mp4", ledger)
    assert source.requests[-1] == ("changed.mp4", f"bytes={10 * MIB}-")  # it did resume
    with pytest.raises(s3.exceptions.NoSuchKey):
        await s3.get_object(Bucket=stack.s3_bucket, Key="t/changed.mp4")
    assert await open_uploads(stack, s3, "t/changed.mp4") == []

    stored = await copy(stack, s3, source.url("changed.mp4"), "t/changed.mp4", ledger)
    assert stored.resumed_parts == 0
    assert await stored_bytes(stack, s3, "t/changed.mp4") == data
    assert stored.checksum == composite(data)


async def test_a_source_that_ignores_ranges_gets_a_fresh_upload(
    stack: Stack, s3: S3Client, source: RecordingSource, ledger: PartLedger
) -> None:
    data = os.urandom(12 * MIB)
    source.files["norange.mp4"] = data
    source.faults["norange.mp4"] = Fault(truncate_at=6 * MIB, times=1)
    with pytest.raises(SourceError):
        await copy(stack, s3, source.url("norange.mp4"), "t/norange.mp4", ledger)
    source.faults["norange.mp4"] = Fault(ignore_ranges=True)
    stored = await copy(stack, s3, source.url("norange.mp4"), "t/norange.mp4", ledger)
    assert stored.resumed_parts == 0
    assert await stored_bytes(stack, s3, "t/norange.mp4") == data
    assert await open_uploads(stack, s3, "t/norange.mp4") == []


async def test_abandoning_a_recording_leaves_no_upload_behind(
    stack: Stack, s3: S3Client, source: RecordingSource, ledger: PartLedger
) -> None:
    source.files["gone.mp4"] = os.urandom(8 * MIB)
    source.faults["gone.mp4"] = Fault(truncate_at=6 * MIB)  # declares 8 MiB, sends 6
    with pytest.raises(SourceError) as raised:
        await copy(stack, s3, source.url("gone.mp4"), "t/gone.mp4", ledger)
    assert f"after {6 * MIB} bytes, short of the length it declared" in str(raised.value)
    assert failure_reason(raised.value) == "source_truncated"
    assert len(await open_uploads(stack, s3, "t/gone.mp4")) == 1
    assert await abort_unfinished(s3, stack.s3_bucket, "t/gone.mp4", ledger) == 1
    assert await open_uploads(stack, s3, "t/gone.mp4") == []


async def test_an_upload_is_given_up_only_by_the_worker_holding_the_lease(
    stack: Stack, s3: S3Client, source: RecordingSource, db: asyncpg.Pool
) -> None:
    """A worker whose lease another has taken cannot record an upload abandoned, so it never
    aborts it: the ledger's write is fenced where S3's abort cannot be."""
    recording_id = await db.fetchval(
        "INSERT INTO recordings (org_id, user_id, bot_id) VALUES ($1, $2, $3) RETURNING id",
        uuid.uuid4(),
        uuid.uuid4(),
        str(uuid.uuid4()),
    )
    old = await UploadLease.take(db, recording_id, "old", 600)
    assert old is not None
    source.files["kept.mp4"] = os.urandom(8 * MIB)
    source.faults["kept.mp4"] = Fault(truncate_at=6 * MIB)
    with pytest.raises(SourceError):
        await copy(stack, s3, source.url("kept.mp4"), "t/kept.mp4", PostgresPartLedger(db, old))
    (upload,) = await open_uploads(stack, s3, "t/kept.mp4")
    upload_id = upload["UploadId"]  # type: ignore[index]
    await db.execute(  # the old worker's lease runs out, and another worker takes it
        "UPDATE recordings SET upload_lease_expires_at = now() WHERE id = $1", recording_id
    )
    new = await UploadLease.take(db, recording_id, "new", 600)
    assert new is not None

    stale = PostgresPartLedger(db, old)
    with pytest.raises(LeaseLost):
        await abort_unfinished(s3, stack.s3_bucket, "t/kept.mp4", stale)
    assert await open_uploads(stack, s3, "t/kept.mp4") == [upload]
    assert await stale.abandoned([upload_id]) == set()

    current = PostgresPartLedger(db, new)
    assert await abort_unfinished(s3, stack.s3_bucket, "t/kept.mp4", current) == 1
    assert await current.abandoned([upload_id]) == {upload_id}
    assert await open_uploads(stack, s3, "t/kept.mp4") == []


@pytest.mark.parametrize("status", [403, 404, 500])
async def test_error_status_is_a_source_error(
    stack: Stack, s3: S3Client, source: RecordingSource, status: int
) -> None:
    source.files["x.mp4"] = b"data"
    source.faults["x.mp4"] = Fault(status=status)
    with pytest.raises(SourceError, match=f"HTTP {status}") as raised:
        await copy(stack, s3, source.url("x.mp4"), "t/x.mp4")
    assert failure_reason(raised.value) == f"source_http_{status}"
    assert await open_uploads(stack, s3, "t/x.mp4") == []


async def test_a_slow_source_still_arrives_whole(
    stack: Stack, s3: S3Client, source: RecordingSource
) -> None:
    data = os.urandom(3 * MIB)
    source.files["slow.mp4"] = data
    source.faults["slow.mp4"] = Fault(delay_per_chunk=0.1)
    await copy(stack, s3, source.url("slow.mp4"), "t/slow.mp4")
    assert await stored_bytes(stack, s3, "t/slow.mp4") == data
