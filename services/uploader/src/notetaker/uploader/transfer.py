"""Streaming copy from a provider URL into S3 with multipart upload, resumable and verified.

Bytes flow from the HTTP response into parts; at most `parts_in_flight` parts upload at once and
reading the source waits while they do (backpressure), so memory is bounded by the part size and
the parts in flight whatever the file's size: one reused buffer per part in flight plus the one
being filled, and a slice of each part in asyncio's transport (see `PartBody`). A byte is copied
once on our side, from the received chunk into its part's buffer. The part size grows for files
that would need more than S3's 10,000 parts.

Each part carries its SHA-256 (S3 verifies it where it supports additional checksums) and its
digest is kept in a ledger. An attempt that dies leaves its multipart upload behind; the next
attempt lists the parts S3 holds, keeps the ones the ledger vouches for, and asks the source for
the rest with a Range request. A source that ignores ranges gets a fresh upload (the old one is
aborted). At the end the object's composite checksum (S3's SHA-256 of the part digests) is
checked against the one computed here.

Read from the top: `stream_to_s3` makes one `_Copy` of a source into a `Destination` (bucket,
key, ledger, lease); the copy resumes or starts a `MultipartUpload`, and a `_PartWriter` fills
it. Creating, completing and aborting an upload, and deleting a wrong object, each need the
`Lease` to hold: a worker that lost it to another touches nothing of the other's upload.

S3 cannot fence those steps by the lease's token, and a worker can go stale between its check
and S3 acting on the request (paused, or the request slow in flight), so each is also made safe
on its own. An upload is aborted only once the ledger has recorded it abandoned, a write the
ledger makes only for the current holder of the lease, and no copy ever resumes an abandoned
upload: a late abort only ever hits an upload nobody writes to. A wrong object is deleted only
if it is still the one this completion wrote (`If-Match` its ETag), never a successor's. A late
completion needs nothing more: an upload is completed only once every part of the file is in
it and in the ledger, so a successor resuming it adds no part and completes the same parts.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import io
import math
import re
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

import aiohttp
from aiohttp.abc import AbstractStreamWriter
from aiohttp.payload import Payload
from botocore.exceptions import ClientError

from notetaker.common import source_policy
from notetaker.common.logs import get_logger
from notetaker.common.s3 import s3_client
from notetaker.common.settings import NotetakerSettings
from notetaker.common.source_policy import (
    REASON as FORBIDDEN,
)
from notetaker.common.source_policy import (
    SourceForbidden,
    SourcePolicy,
    host_of,
    is_forbidden_failure,
)

if TYPE_CHECKING:
    from types_aiobotocore_s3 import S3Client
    from types_aiobotocore_s3.type_defs import CompletedPartTypeDef

log = get_logger(__name__)

S3_MAX_PARTS = 10_000
PART_SIZE_CEILING = 64 * 1024 * 1024  # a part buffer never grows past this, whatever a source says
MAX_RECORDING_BYTES = S3_MAX_PARTS * PART_SIZE_CEILING  # the largest a setting may allow
TOO_LARGE = "source_too_large"
_CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+)")


class SourceError(Exception):
    """The provider URL could not be read completely (status, expiry, truncation, reset).

    `reason` is a bounded label for the failures counter: `source_http_<status>`,
    `source_truncated`, `source_stalled`, `source_forbidden`, `source_too_large` or
    `source_read`.
    """

    def __init__(self, message: str, reason: str = "source_read") -> None:
        super().__init__(message)
        self.reason = reason

    @property
    def permanent(self) -> bool:
        """Asking again cannot help: the policy refuses where the URL leads, or the recording is
        larger than this deployment keeps."""
        return self.reason in (FORBIDDEN, TOO_LARGE)


class IntegrityError(Exception):
    """The stored object does not match what was read from the source."""


@dataclass(frozen=True)
class Part:
    number: int
    size: int
    etag: str
    sha256: bytes


@dataclass(frozen=True)
class StoredObject:
    key: str
    size_bytes: int
    checksum: str  # S3's composite SHA-256: base64(sha256(part digests))-N
    parts: int
    resumed_parts: int


class PartLedger(Protocol):
    """Where part digests of in-progress uploads are kept between attempts."""

    async def record(self, upload_id: str, part: Part) -> None: ...

    async def parts(self, upload_id: str) -> dict[int, tuple[int, bytes]]: ...

    async def forget(self, upload_id: str) -> None: ...

    async def abandon(self, upload_id: str) -> None:
        """Record that the upload is given up, never to be resumed; only while the lease holds
        (else raise), and before it is aborted."""
        ...

    async def abandoned(self, upload_ids: list[str]) -> set[str]:
        """Which of these uploads were given up."""
        ...


class Lease(Protocol):
    """The worker's hold on the recording: `check` raises unless it still holds it. Completing,
    aborting and deleting cannot be fenced by S3 itself, so each is made only after a check."""

    async def check(self) -> None: ...


class NoLedger:
    """Without a ledger nothing can be vouched for: interrupted uploads restart."""

    async def record(self, upload_id: str, part: Part) -> None:
        return None

    async def parts(self, upload_id: str) -> dict[int, tuple[int, bytes]]:
        return {}

    async def forget(self, upload_id: str) -> None:
        return None

    async def abandon(self, upload_id: str) -> None:
        return None

    async def abandoned(self, upload_ids: list[str]) -> set[str]:
        return set()


class NoLease:
    """A copy on its own (tests, the benchmark): nobody else can take it over."""

    async def check(self) -> None:
        return None


async def stream_to_s3(
    http: aiohttp.ClientSession,
    s3: S3Client,
    *,
    url: str,
    bucket: str,
    key: str,
    content_type: str,
    part_size: int,
    parts_in_flight: int,
    ledger: PartLedger | None = None,
    progress_every_seconds: float = 30.0,
    max_bytes: int = MAX_RECORDING_BYTES,
    min_rate: MinRate | None = None,
    lease: Lease | None = None,
) -> StoredObject:
    """Copy `url` into s3://`bucket`/`key`, continuing its newest unfinished upload from the
    parts the ledger vouches for; changing an upload needs `lease` (none: nobody else copies)."""
    destination = Destination(s3, bucket, key, ledger or NoLedger(), lease or NoLease())
    copy = _Copy(
        destination,
        content_type,
        part_size,
        parts_in_flight,
        max_bytes,
        progress_every_seconds,
        min_rate,
    )
    return await copy.run(http, url)


class _Copy:
    """One attempt at copying a source into its destination; `part_size` is the least (larger
    for a file that would pass S3's part limit)."""

    def __init__(
        self,
        destination: Destination,
        content_type: str,
        part_size: int,
        parts_in_flight: int,
        max_bytes: int,
        progress_every_seconds: float,
        min_rate: MinRate | None,
    ) -> None:
        self.destination = destination
        self.content_type = content_type
        self.part_size = part_size
        self.parts_in_flight = parts_in_flight
        self.max_bytes = max_bytes
        self.progress_every_seconds = progress_every_seconds
        self.min_rate = min_rate

    async def run(self, http: aiohttp.ClientSession, url: str) -> StoredObject:
        resume = await self.destination.resumable()
        offset = resume.offset if resume else 0
        headers = {"range": f"bytes={offset}-"} if offset else {}
        try:
            async with source_policy.get(http, url, headers=headers) as response:
                if offset and response.status == 416 and resume is not None:
                    # Nothing past the stored parts: they are the whole file.
                    return await resume.upload.complete(resume.parts, offset, len(resume.parts))
                start = await self._start(response, resume, url)
                progress = _Progress(
                    self.destination.key,
                    start.total,
                    sum(p.size for p in start.done),
                    self.progress_every_seconds,
                    parts=len(start.done),
                )
                writer = _PartWriter(
                    start.upload,
                    start.part_size,
                    self.parts_in_flight,
                    progress,
                    _StallWatch(self.min_rate),
                )
                new_parts = await writer.copy(
                    response, len(start.done) + 1, self.max_bytes - offset
                )
        except SourceForbidden as exc:
            raise SourceError(str(exc), reason=FORBIDDEN) from exc
        except (aiohttp.ClientError, TimeoutError) as exc:
            if is_forbidden_failure(exc):
                raise SourceError(
                    f"the source at {host_of(url)} leads to what is not a public address",
                    reason=FORBIDDEN,
                ) from exc
            raise SourceError(f"reading the source at {host_of(url)} failed: {_why(exc)}") from exc
        parts = start.done + new_parts
        stored = sum(p.size for p in parts)
        if start.total is not None and stored != start.total:
            raise SourceError(
                f"source sent {stored} bytes in all but declared {start.total}",
                reason="source_truncated",
            )
        return await start.upload.complete(parts, stored, len(start.done))

    async def _start(
        self, response: aiohttp.ClientResponse, resume: _Resumable | None, url: str
    ) -> _Start:
        """Continue `resume` if the source answers the Range request for what follows it, else
        start a fresh upload on a whole answer (aborting `resume`), else fail."""
        span = _content_range(response) if response.status == 206 else None
        if resume is not None and resume.offset and span is not None and span[0] == resume.offset:
            whole = span[1]
            if whole > self.max_bytes:
                raise too_large(whole, self.max_bytes)
            log.info(
                "upload.resumed",
                key=self.destination.key,
                parts_done=len(resume.parts),
                offset=resume.offset,
                total=whole,
            )
            return _Start(resume.upload, resume.parts, whole, resume.parts[0].size)
        if response.status != 200:
            # The status and the host only: a body may echo the signed URL or say anything.
            raise SourceError(
                f"source at {host_of(url)} answered HTTP {response.status}",
                reason=f"source_http_{response.status}",
            )
        if resume is not None:  # nothing to continue, or the source ignores ranges
            await resume.upload.abort()
        total = response.content_length
        if total is not None and total > self.max_bytes:  # before any buffer exists
            raise too_large(total, self.max_bytes)
        size = part_size_for(total, self.part_size)
        return _Start(await self.destination.start(self.content_type), [], total, size)


@dataclass(frozen=True)
class _Start:
    """Where an attempt writes: the upload, the parts it already holds, the source's whole
    length (when it says) and the part size."""

    upload: MultipartUpload
    done: list[Part]
    total: int | None
    part_size: int


class _PartWriter:
    """Reads a body into parts of `part_size` and sends each to the upload, at most
    `parts_in_flight` at once: reading waits while they are all busy (backpressure)."""

    def __init__(
        self,
        upload: MultipartUpload,
        part_size: int,
        parts_in_flight: int,
        progress: _Progress,
        stall: _StallWatch,
    ) -> None:
        self.upload = upload
        self.part_size = part_size
        self.progress = progress
        self.stall = stall
        self.slots = asyncio.Semaphore(parts_in_flight)
        self.tasks: list[asyncio.Task[Part]] = []
        self.failed = asyncio.Event()
        # Part buffers are reused: at most one being filled and one per part in flight,
        # allocated (and faulted in) once per copy rather than once per part.
        self.free: list[bytearray] = []

    async def copy(self, response: aiohttp.ClientResponse, first: int, limit: int) -> list[Part]:
        """The parts from number `first` on; more than `limit` bytes is a source too large (one
        that did not say its length, or lied about it)."""
        part_size = self.part_size
        buffer, filled, received = bytearray(part_size), 0, 0
        try:
            async for chunk in response.content.iter_any():
                received += len(chunk)
                if received > limit:
                    raise too_large(received, limit)
                self.stall.check(received)
                view = memoryview(chunk)
                while view:
                    take = min(part_size - filled, len(view))
                    buffer[filled : filled + take] = view[:take]  # the one copy a byte gets here
                    filled, view = filled + take, view[take:]
                    if filled == part_size:
                        await self._send(first, buffer, filled)
                        buffer, filled = (self.free.pop() if self.free else bytearray(part_size)), 0
                if self.failed.is_set():
                    break
            else:
                if filled or (not self.tasks and first == 1):
                    await self._send(first, buffer, filled)
            return list(await asyncio.gather(*self.tasks))
        except (aiohttp.ClientError, TimeoutError) as exc:
            await asyncio.gather(*self.tasks, return_exceptions=True)  # keep what finished
            if isinstance(exc, aiohttp.ClientPayloadError):
                raise SourceError(
                    f"source ended the body after {received} bytes, short of the length it"
                    f" declared ({exc})",
                    reason="source_truncated",
                ) from exc
            raise
        finally:
            for task in self.tasks:
                task.cancel()

    async def _send(self, first: int, buffer: bytearray, size: int) -> None:
        view = memoryview(buffer)[:size]
        # ~15 ms for 5 MiB, hashed in a thread (hashlib releases the GIL) while the part waits
        # for a slot, so it goes the moment one frees.
        hashed = asyncio.ensure_future(asyncio.to_thread(hashlib.sha256, view))
        waiting = time.monotonic()
        await self.slots.acquire()  # backpressure: stop reading the source while parts are full
        self.stall.paused(time.monotonic() - waiting)
        number = first + len(self.tasks)
        self.tasks.append(asyncio.create_task(self._put(number, buffer, view, hashed)))

    async def _put(
        self,
        number: int,
        buffer: bytearray,
        view: memoryview,
        hashed: asyncio.Future[hashlib._Hash],
    ) -> Part:
        slot_held = True
        try:
            digest = (await hashed).digest()
            etag = await self.upload.put_part(number, view, digest)
            # Sent and answered: nothing refers to the buffer's bytes any more, and the next
            # part may go while this one is written down.
            self.free.append(buffer)
            self.slots.release()
            slot_held = False
            part = Part(number, len(view), etag, digest)
            await self.upload.record(part)
            self.progress.part_stored(part.size)
            return part
        except BaseException:
            self.failed.set()
            raise
        finally:
            if slot_held:
                self.slots.release()


class Destination:
    """Where one file goes: its object, the ledger vouching for the parts of its unfinished
    uploads, and the lease without which none of them may be created, completed or aborted."""

    # A plain class, not a dataclass: mutmut leaves the methods of decorated classes alone.
    def __init__(
        self, s3: S3Client, bucket: str, key: str, ledger: PartLedger, lease: Lease
    ) -> None:
        self.s3 = s3
        self.bucket = bucket
        self.key = key
        self.ledger = ledger
        self.lease = lease

    def upload(self, upload_id: str) -> MultipartUpload:
        return MultipartUpload(self, upload_id)

    async def unfinished(self) -> list[MultipartUpload]:
        """The unfinished uploads of this key, oldest first."""
        listing = await self.s3.list_multipart_uploads(Bucket=self.bucket, Prefix=self.key)
        uploads = sorted(
            (u for u in listing.get("Uploads", []) if u.get("Key") == self.key),
            key=lambda u: u.get("Initiated", 0),
        )
        return [self.upload(u["UploadId"]) for u in uploads]

    async def resumable(self) -> _Resumable | None:
        """The newest unfinished upload not given up, with the parts we can vouch for; the
        others aborted (again, for those given up before: an abort whose answer was lost)."""
        uploads = await self.unfinished()
        given_up = await self.ledger.abandoned([u.upload_id for u in uploads])
        live = [u for u in uploads if u.upload_id not in given_up]
        newest = live[-1] if live else None
        for upload in uploads:
            if upload is not newest:
                await upload.abort()
        if newest is None:
            return None
        return _Resumable(newest, await newest.vouched_parts())

    async def start(self, content_type: str) -> MultipartUpload:
        await self.lease.check()
        created = await self.s3.create_multipart_upload(
            Bucket=self.bucket,
            Key=self.key,
            ContentType=content_type,
            ServerSideEncryption="AES256",
            ChecksumAlgorithm="SHA256",
        )
        return self.upload(created["UploadId"])


@dataclass(frozen=True)
class _Resumable:
    upload: MultipartUpload
    parts: list[Part]

    @property
    def offset(self) -> int:
        return sum(p.size for p in self.parts)


class MultipartUpload:
    """One multipart upload: its parts go to S3 with their SHA-256 and into the ledger; it is
    completed (and checked) or aborted only while the lease holds."""

    def __init__(self, destination: Destination, upload_id: str) -> None:
        self.destination = destination
        self.upload_id = upload_id

    @property
    def key(self) -> str:
        return self.destination.key

    async def put_part(self, number: int, view: memoryview, digest: bytes) -> str:
        """Send one part (S3 checks its SHA-256); its ETag."""
        answer = await self.destination.s3.upload_part(
            Bucket=self.destination.bucket,
            Key=self.key,
            UploadId=self.upload_id,
            PartNumber=number,
            Body=PartBody(view),  # type: ignore[arg-type]  # file-like enough for botocore
            ChecksumSHA256=base64.b64encode(digest).decode(),
        )
        return answer["ETag"]

    async def record(self, part: Part) -> None:
        await self.destination.ledger.record(self.upload_id, part)

    async def vouched_parts(self) -> list[Part]:
        """The parts S3 holds and the ledger vouches for: the contiguous prefix both agree on,
        all of one size but the last (else none: the upload cannot be continued safely)."""
        listed = await self._listed_parts()
        vouched = await self.destination.ledger.parts(self.upload_id)
        parts: list[Part] = []
        for number in range(1, len(listed) + 1):
            size_and_etag = listed.get(number)
            known = vouched.get(number)
            if size_and_etag is None or known is None or known[0] != size_and_etag[0]:
                break
            parts.append(Part(number, size_and_etag[0], size_and_etag[1], known[1]))
        if len(parts) > 1 and any(p.size != parts[0].size for p in parts[:-1]):
            return []
        return parts

    async def _listed_parts(self) -> dict[int, tuple[int, str]]:
        found: dict[int, tuple[int, str]] = {}
        marker = 0
        while True:
            page = await self.destination.s3.list_parts(
                Bucket=self.destination.bucket,
                Key=self.key,
                UploadId=self.upload_id,
                PartNumberMarker=marker,
            )
            for p in page.get("Parts", []):
                found[p["PartNumber"]] = (p["Size"], p["ETag"])
            if not page.get("IsTruncated"):
                return found
            marker = page["NextPartNumberMarker"]

    async def abort(self) -> None:
        """Give the upload up: recorded first (only while the lease holds), then aborted, so
        this abort, however late it reaches S3, only ever ends an upload nobody resumes."""
        await self.destination.lease.check()
        await self.destination.ledger.abandon(self.upload_id)
        try:
            await self.destination.s3.abort_multipart_upload(
                Bucket=self.destination.bucket, Key=self.key, UploadId=self.upload_id
            )
        except ClientError as exc:
            if _error_code(exc) != "NoSuchUpload":
                raise
            # Already ended: aborted by an earlier try whose answer was lost.
        await self.destination.ledger.forget(self.upload_id)

    async def complete(self, parts: list[Part], size: int, resumed: int) -> StoredObject:
        """Complete the upload of `parts` (`size` bytes, the first `resumed` of them from an
        earlier attempt) and check S3's object against them; a mismatch is deleted."""
        s3, bucket, key = self.destination.s3, self.destination.bucket, self.key
        completed: list[CompletedPartTypeDef] = [
            {
                "PartNumber": p.number,
                "ETag": p.etag,
                "ChecksumSHA256": base64.b64encode(p.sha256).decode(),
            }
            for p in parts
        ]
        await self.destination.lease.check()
        answer = await s3.complete_multipart_upload(
            Bucket=bucket, Key=key, UploadId=self.upload_id, MultipartUpload={"Parts": completed}
        )
        await self.destination.ledger.forget(self.upload_id)
        checksum = composite_checksum(parts)
        head = await s3.head_object(Bucket=bucket, Key=key, ChecksumMode="ENABLED")
        stored_checksum = head.get("ChecksumSHA256")
        if head["ContentLength"] != size or (
            stored_checksum and stored_checksum.split("-")[0] != checksum.split("-")[0]
        ):
            await self.destination.lease.check()
            deleted = await self._delete_if_still(answer["ETag"])
            raise IntegrityError(
                f"s3://{bucket}/{key} holds {head['ContentLength']} bytes with checksum"
                f" {stored_checksum}, expected {size} bytes with {checksum};"
                + (" deleted" if deleted else " not deleted: replaced or gone since")
            )
        return StoredObject(key, size, checksum, len(parts), resumed)

    async def _delete_if_still(self, etag: str) -> bool:
        """Delete the object this upload became, unless it is gone or another has replaced it
        since (a successor's completion); whether it was deleted."""
        try:
            await self.destination.s3.delete_object(
                Bucket=self.destination.bucket, Key=self.key, IfMatch=etag
            )
        except ClientError as exc:
            if _error_code(exc) not in ("PreconditionFailed", "NoSuchKey"):
                raise
            return False
        return True


def _error_code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


async def abort_unfinished(
    s3: S3Client, bucket: str, key: str, ledger: PartLedger, lease: Lease | None = None
) -> int:
    """Abort every unfinished upload of `key` (when a recording fails for good)."""
    uploads = await Destination(s3, bucket, key, ledger, lease or NoLease()).unfinished()
    for upload in uploads:
        await upload.abort()
    return len(uploads)


def composite_checksum(parts: list[Part]) -> str:
    digest = hashlib.sha256(b"".join(p.sha256 for p in parts)).digest()
    return f"{base64.b64encode(digest).decode()}-{len(parts)}"


def part_size_for(length: int | None, minimum: int) -> int:
    """Part size that keeps a file of `length` bytes within S3's part limit (lengths are checked
    against the recording limit first, so this never passes PART_SIZE_CEILING)."""
    if length is None:
        return minimum
    return min(max(minimum, math.ceil(length / S3_MAX_PARTS)), max(minimum, PART_SIZE_CEILING))


def _content_range(response: aiohttp.ClientResponse) -> tuple[int, int] | None:
    """(first byte, total length) of a 206 answer."""
    match = _CONTENT_RANGE.fullmatch(response.headers.get("content-range", ""))
    return (int(match.group(1)), int(match.group(3))) if match else None


def too_large(length: int, max_bytes: int) -> SourceError:
    return SourceError(
        f"the source is {length} bytes or more, over the {max_bytes}-byte limit"
        " (NOTETAKER_UPLOAD_MAX_RECORDING_BYTES)",
        reason=TOO_LARGE,
    )


def _why(exc: BaseException) -> str:
    """What went wrong, without the URL (aiohttp's messages and reprs carry the request's)."""
    cause = exc.__cause__ or exc.__context__
    detail = cause.strerror if isinstance(cause, OSError) and cause.strerror else None
    if isinstance(exc, aiohttp.ClientConnectorError):
        detail = exc.os_error.strerror or detail
    return type(exc).__name__ + (f" ({detail})" if detail else "")


@dataclass(frozen=True)
class MinRate:
    """A source must send `bytes_per_second` on average over every `window_seconds` (time the
    copy itself waits for S3 does not count), or it fails as `source_stalled`: a source that
    trickles a byte a minute would otherwise hold an upload slot for ever."""

    bytes_per_second: float
    window_seconds: float


class _StallWatch:
    def __init__(self, rate: MinRate | None) -> None:
        self.rate = rate
        self.since = time.monotonic()
        self.bytes_since = 0

    def paused(self, seconds: float) -> None:
        self.since += seconds  # our own backpressure is not the source's slowness

    def check(self, received: int) -> None:
        if self.rate is None:
            return
        elapsed = time.monotonic() - self.since
        if elapsed < self.rate.window_seconds:
            return
        rate = (received - self.bytes_since) / elapsed
        if rate < self.rate.bytes_per_second:
            raise SourceError(
                f"source sent {rate:.0f} bytes/s over {elapsed:.0f}s, under the"
                f" {self.rate.bytes_per_second:.0f} bytes/s floor"
                " (NOTETAKER_SOURCE_MIN_BYTES_PER_SECOND)",
                reason="source_stalled",
            )
        self.since, self.bytes_since = time.monotonic(), received


@dataclass
class _Progress:
    """Logs how far a long copy has got: after a stored part, at most once per `every` seconds."""

    key: str
    total: int | None  # the whole file, when the source says
    stored: int  # bytes in S3 so far, resumed parts included
    every: float
    parts: int = 0
    started: float = field(default_factory=time.monotonic)
    logged: float = field(default_factory=time.monotonic)
    this_attempt: int = 0

    def part_stored(self, size: int) -> None:
        self.stored += size
        self.this_attempt += size
        self.parts += 1
        now = time.monotonic()
        if now - self.logged < self.every:
            return
        self.logged = now
        log.info(
            "upload.progress",
            key=self.key,
            bytes_stored=self.stored,
            total_bytes=self.total,
            percent=round(100 * self.stored / self.total, 1) if self.total else None,
            parts_stored=self.parts,
            mib_per_second=round(self.this_attempt / (now - self.started) / 2**20, 1),
        )


class PartBody(Payload):
    """One part's bytes as a request body: aiohttp sends them in slices, botocore reads their
    length and rewinds them for a retry.

    Given `bytes`, aiohttp hands the whole body to asyncio's transport in one write. Before
    Python 3.12.9 / 3.13.2 that write is joined with the request headers (a copy of the part),
    and the transport copies whatever the socket does not take at once (one or two more), so
    each part in flight cost up to three times its size in memory and as many passes of the CPU.
    Written in slices, each drained before the next, the transport holds one slice at most.
    The body is file-like (`read`/`seek`/`tell`), which botocore validates, uses to rewind it
    on a retry, and answers with `Expect: 100-continue`, as it does for boto3's file parts.
    """

    SLICE = 256 * 1024

    def __init__(self, view: memoryview) -> None:
        super().__init__(view)
        self._value: memoryview = view
        self._size = len(view)
        self._position = 0

    def __len__(self) -> int:
        return len(self._value)

    async def write(self, writer: AbstractStreamWriter) -> None:
        await self.write_with_length(writer, None)

    async def write_with_length(
        self, writer: AbstractStreamWriter, content_length: int | None
    ) -> None:
        view = self._value if content_length is None else self._value[:content_length]
        for start in range(0, len(view), self.SLICE):
            await writer.write(view[start : start + self.SLICE])

    def decode(self, encoding: str = "utf-8", errors: str = "strict") -> str:
        return bytes(self._value).decode(encoding, errors)

    def read(self, size: int = -1) -> bytes:
        end = len(self._value) if size < 0 else min(len(self._value), self._position + size)
        data = bytes(self._value[self._position : end])
        self._position = end
        return data

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._position, io.SEEK_END: len(self._value)}
        self._position = max(0, min(len(self._value), base[whence] + offset))
        return self._position

    def tell(self) -> int:
        return self._position


def source_session(read_timeout_seconds: float, policy: SourcePolicy) -> aiohttp.ClientSession:
    """The HTTP client for provider URLs: raw bytes (never decompressed), only what `policy`
    allows (public addresses, a few redirects), a read that stalls for `read_timeout_seconds`
    fails; no limit on the whole transfer."""
    return policy.session(
        timeout=aiohttp.ClientTimeout(total=None, sock_connect=10, sock_read=read_timeout_seconds),
        auto_decompress=False,
        headers={"accept-encoding": "identity"},
        read_bufsize=1024 * 1024,
    )


@asynccontextmanager
async def copy_clients(
    settings: NotetakerSettings, read_timeout_seconds: float
) -> AsyncIterator[tuple[S3Client, aiohttp.ClientSession]]:
    """The clients a copy needs: S3 without SigV4's hash of each body (every part carries its own
    signed SHA-256 checksum, which S3 verifies) and the session for provider URLs."""
    async with (
        s3_client(settings, sign_payload=False) as s3,
        source_session(read_timeout_seconds, settings.source_policy()) as http,
    ):
        yield s3, http
