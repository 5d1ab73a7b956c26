"""Streaming copy from a provider URL into S3 with multipart upload.

Bytes flow from the HTTP response into parts; at most `parts_in_flight` parts are uploading at
once, so memory stays near part_size * (parts_in_flight + 1) whatever the file's size. The part
size grows for files that would need more than S3's 10,000 parts. A short or failed download
aborts the multipart upload, so nothing half-written is left to cost money.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import httpx

from notetaker.common.logs import get_logger

if TYPE_CHECKING:
    from types_aiobotocore_s3 import S3Client
    from types_aiobotocore_s3.type_defs import CompletedPartTypeDef

log = get_logger(__name__)

S3_MAX_PARTS = 10_000


class SourceError(Exception):
    """The provider URL could not be read completely (status, expiry, truncation)."""


@dataclass(frozen=True)
class StoredObject:
    key: str
    size_bytes: int
    sha256: str
    parts: int


def part_size_for(length: int | None, minimum: int) -> int:
    """Part size that keeps a file of `length` bytes within S3's part limit."""
    if length is None:
        return minimum
    return max(minimum, math.ceil(length / S3_MAX_PARTS))


async def stream_to_s3(
    http: httpx.AsyncClient,
    s3: S3Client,
    *,
    url: str,
    bucket: str,
    key: str,
    content_type: str,
    part_size: int,
    parts_in_flight: int,
) -> StoredObject:
    async with http.stream("GET", url) as response:
        if response.status_code != 200:
            body = (await response.aread())[:300].decode(errors="replace")
            raise SourceError(f"source answered HTTP {response.status_code}: {body}")
        declared = response.headers.get("content-length")
        expected = int(declared) if declared and declared.isdigit() else None
        size = part_size_for(expected, part_size)
        upload = await s3.create_multipart_upload(
            Bucket=bucket, Key=key, ContentType=content_type, ServerSideEncryption="AES256"
        )
        upload_id = upload["UploadId"]
        try:
            stored = await _copy_parts(response, s3, bucket, key, upload_id, size, parts_in_flight)
            if expected is not None and stored.size_bytes != expected:
                raise SourceError(f"source sent {stored.size_bytes} bytes but declared {expected}")
        except BaseException:
            await s3.abort_multipart_upload(Bucket=bucket, Key=key, UploadId=upload_id)
            raise
        return stored


async def _copy_parts(
    response: httpx.Response,
    s3: S3Client,
    bucket: str,
    key: str,
    upload_id: str,
    part_size: int,
    parts_in_flight: int,
) -> StoredObject:
    slots = asyncio.Semaphore(parts_in_flight)
    tasks: list[asyncio.Task[CompletedPartTypeDef]] = []
    digest = hashlib.sha256()
    buffer = bytearray()
    total = 0

    async def put(number: int, data: bytes) -> CompletedPartTypeDef:
        try:
            answer = await s3.upload_part(
                Bucket=bucket, Key=key, UploadId=upload_id, PartNumber=number, Body=data
            )
            return {"PartNumber": number, "ETag": answer["ETag"]}
        finally:
            slots.release()

    async def send(data: bytes) -> None:
        await slots.acquire()  # backpressure: stop reading the source while parts are full
        tasks.append(asyncio.create_task(put(len(tasks) + 1, data)))

    try:
        async for chunk in response.aiter_raw():
            digest.update(chunk)
            total += len(chunk)
            buffer += chunk
            while len(buffer) >= part_size:
                await send(bytes(buffer[:part_size]))
                del buffer[:part_size]
            if any(t.done() and t.exception() for t in tasks):
                break
        if buffer or not tasks:
            await send(bytes(buffer))
        parts = await asyncio.gather(*tasks)
    except httpx.HTTPError as exc:
        raise SourceError(f"reading the source failed: {exc!r}") from exc
    finally:
        for task in tasks:
            task.cancel()
    await s3.complete_multipart_upload(
        Bucket=bucket, Key=key, UploadId=upload_id, MultipartUpload={"Parts": list(parts)}
    )
    return StoredObject(key=key, size_bytes=total, sha256=digest.hexdigest(), parts=len(parts))
