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


class PartLedger(Protocol):
    """Where part digests of in-progress uploads are kept between attempts."""

    async def record(self, upload_id: str, part: Part) -> None: ...

    async def parts(self, upload_id: str) -> dict[int, tuple[int, bytes]]: ...

    async def forget(self, upload_id: str) -> None: ...


class Lease(Protocol):
    """The worker's hold on the recording: `check` raises unless it still holds it. Completing,
    aborting and deleting cannot be fenced by S3 itself, so each is made only after a check."""

    async def check(self) -> None: ...


class NoLease:
    """A copy on its own (tests, the benchmark): nobody else can take it over."""

    async def check(self) -> None:
        return None


class NoLedger:
    """Without a ledger nothing can be vouched for: interrupted uploads restart."""

    async def record(self, upload_id: str, part: Part) -> None:
        return None

    async def parts(self, upload_id: str) -> dict[int, tuple[int, bytes]]:
        return {}

    async def forget(self, upload_id: str) -> None:
        return None


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


def part_size_for(length: int | None, minimum: int) -> int:
    """Part size that keeps a file of `length` bytes within S3's part limit (lengths are checked
    against the recording limit first, so this never passes PART_SIZE_CEILING)."""
    if length is None:
        return minimum
    return min(max(minimum, math.ceil(length / S3_MAX_PARTS)), max(minimum, PART_SIZE_CEILING))


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


def too_large(length: int, max_bytes: int) -> SourceError:
    return SourceError(
        f"the source is {length} bytes or more, over the {max_bytes}-byte limit"
        " (NOTETAKER_UPLOAD_MAX_RECORDING_BYTES)",
        reason=TOO_LARGE,
    )


def composite_checksum(parts: list[Part]) -> str:
    digest = hashlib.sha256(b"".join(p.sha256 for p in parts)).digest()
    return f"{base64.b64encode(digest).decode()}-{len(parts)}"


@dataclass(frozen=True)
class _Resumable:
    upload_id: str
    parts: list[Part]

    @property
    def offset(self) -> int:
        return sum(p.size for p in self.parts)


async def _resumable(
    s3: S3Client, bucket: str, key: str, ledger: PartLedger, lease: Lease
) -> _Resumable | None:
    """The newest unfinished upload of `key` with the parts we can vouch for; others aborted."""
    listing = await s3.list_multipart_uploads(Bucket=bucket, Prefix=key)
    uploads = sorted(
        (u for u in listing.get("Uploads", []) if u.get("Key") == key),
        key=lambda u: u.get("Initiated", 0),
    )
    if not uploads:
        return None
    *stale, newest = uploads
    for upload in stale:
        await _abort(s3, bucket, key, upload["UploadId"], ledger, lease)
    upload_id = newest["UploadId"]
    listed = await _list_parts(s3, bucket, key, upload_id)
    vouched = await ledger.parts(upload_id)
    parts: list[Part] = []
    for number in range(1, len(listed) + 1):  # the contiguous prefix both sides agree on
        size_and_etag = listed.get(number)
        known = vouched.get(number)
        if size_and_etag is None or known is None or known[0] != size_and_etag[0]:
            break
        parts.append(Part(number, size_and_etag[0], size_and_etag[1], known[1]))
    if len(parts) > 1 and any(p.size != parts[0].size for p in parts[:-1]):
        parts = []  # not one part size: cannot continue it safely
    return _Resumable(upload_id, parts)


async def _list_parts(
    s3: S3Client, bucket: str, key: str, upload_id: str
) -> dict[int, tuple[int, str]]:
    found: dict[int, tuple[int, str]] = {}
    marker = 0
    while True:
        page = await s3.list_parts(
            Bucket=bucket, Key=key, UploadId=upload_id, PartNumberMarker=marker
        )
        for p in page.get("Parts", []):
            found[p["PartNumber"]] = (p["Size"], p["ETag"])
        if not page.get("IsTruncated"):
            return found
        marker = page["NextPartNumberMarker"]


async def _abort(
    s3: S3Client, bucket: str, key: str, upload_id: str, ledger: PartLedger, lease: Lease
) -> None:
    await lease.check()
    await s3.abort_multipart_upload(Bucket=bucket, Key=key, UploadId=upload_id)
    await ledger.forget(upload_id)


async def abort_unfinished(
    s3: S3Client, bucket: str, key: str, ledger: PartLedger, lease: Lease | None = None
) -> int:
    """Abort every unfinished upload of `key` (when a recording fails for good)."""
    lease = lease or NoLease()
    listing = await s3.list_multipart_uploads(Bucket=bucket, Prefix=key)
    uploads = [u for u in listing.get("Uploads", []) if u.get("Key") == key]
    for upload in uploads:
        await _abort(s3, bucket, key, upload["UploadId"], ledger, lease)
    return len(uploads)


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


def _content_range(response: aiohttp.ClientResponse) -> tuple[int, int] | None:
    """(first byte, total length) of a 206 answer."""
    match = _CONTENT_RANGE.fullmatch(response.headers.get("content-range", ""))
    return (int(match.group(1)), int(match.group(3))) if match else None


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
    ledger = ledger or NoLedger()
    lease = lease or NoLease()
    resume = await _resumable(s3, bucket, key, ledger, lease)
    offset = resume.offset if resume else 0
    headers = {"range": f"bytes={offset}-"} if offset else {}
    total: int | None  # the source's whole length, when it says
    try:
        async with source_policy.get(http, url, headers=headers) as response:
            span = _content_range(response) if response.status == 206 else None
            if offset and span is not None and span[0] == offset:
                assert resume is not None
                upload_id, done, total = resume.upload_id, resume.parts, span[1]
                if total > max_bytes:
                    raise too_large(total, max_bytes)
                size = done[0].size
                log.info(
                    "upload.resumed", key=key, parts_done=len(done), offset=offset, total=total
                )
            elif offset and response.status == 416 and resume is not None:
                return await _complete(
                    s3,
                    bucket,
                    key,
                    resume.upload_id,
                    resume.parts,
                    ledger,
                    lease,
                    resume.offset,
                    resume_count=len(resume.parts),
                )
            elif response.status == 200:
                if resume is not None:  # nothing to continue, or the source ignores ranges
                    await _abort(s3, bucket, key, resume.upload_id, ledger, lease)
                total = response.content_length
                if total is not None and total > max_bytes:  # before any buffer exists
                    raise too_large(total, max_bytes)
                size = part_size_for(total, part_size)
                await lease.check()
                created = await s3.create_multipart_upload(
                    Bucket=bucket,
                    Key=key,
                    ContentType=content_type,
                    ServerSideEncryption="AES256",
                    ChecksumAlgorithm="SHA256",
                )
                upload_id, done = created["UploadId"], []
            else:
                # The status and the host only: a body may echo the signed URL or say anything.
                raise SourceError(
                    f"source at {host_of(url)} answered HTTP {response.status}",
                    reason=f"source_http_{response.status}",
                )
            progress = _Progress(
                key, total, sum(p.size for p in done), progress_every_seconds, parts=len(done)
            )
            new_parts = await _copy_parts(
                response,
                s3,
                bucket,
                key,
                upload_id,
                size,
                parts_in_flight,
                ledger,
                len(done) + 1,
                progress,
                max_bytes - offset,
                _StallWatch(min_rate),
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
    parts = done + new_parts
    stored = sum(p.size for p in parts)
    if total is not None and stored != total:
        raise SourceError(
            f"source sent {stored} bytes in all but declared {total}", reason="source_truncated"
        )
    return await _complete(s3, bucket, key, upload_id, parts, ledger, lease, stored, len(done))


async def _copy_parts(
    response: aiohttp.ClientResponse,
    s3: S3Client,
    bucket: str,
    key: str,
    upload_id: str,
    part_size: int,
    parts_in_flight: int,
    ledger: PartLedger,
    first: int,
    progress: _Progress,
    limit: int,
    stall: _StallWatch,
) -> list[Part]:
    """Read the body into parts; more than `limit` bytes is a source too large (one that did
    not say its length, or lied about it)."""
    slots = asyncio.Semaphore(parts_in_flight)
    tasks: list[asyncio.Task[Part]] = []
    failed = asyncio.Event()
    # Part buffers are reused: at most one being filled and one per part in flight, allocated
    # (and faulted in) once per copy rather than once per part.
    free: list[bytearray] = []

    async def put(
        number: int, buffer: bytearray, view: memoryview, hashed: asyncio.Future[hashlib._Hash]
    ) -> Part:
        slot_held = True
        try:
            digest = (await hashed).digest()
            answer = await s3.upload_part(
                Bucket=bucket,
                Key=key,
                UploadId=upload_id,
                PartNumber=number,
                Body=PartBody(view),  # type: ignore[arg-type]  # file-like enough for botocore
                ChecksumSHA256=base64.b64encode(digest).decode(),
            )
            # Sent and answered: nothing refers to the buffer's bytes any more, and the next
            # part may go while this one is written down.
            free.append(buffer)
            slots.release()
            slot_held = False
            part = Part(number, len(view), answer["ETag"], digest)
            await ledger.record(upload_id, part)
            progress.part_stored(part.size)
            return part
        except BaseException:
            failed.set()
            raise
        finally:
            if slot_held:
                slots.release()

    async def send(buffer: bytearray, size: int) -> None:
        view = memoryview(buffer)[:size]
        # ~15 ms for 5 MiB, hashed in a thread (hashlib releases the GIL) while the part waits
        # for a slot, so it goes the moment one frees.
        hashed = asyncio.ensure_future(asyncio.to_thread(hashlib.sha256, view))
        waiting = time.monotonic()
        await slots.acquire()  # backpressure: stop reading the source while parts are full
        stall.paused(time.monotonic() - waiting)
        tasks.append(asyncio.create_task(put(first + len(tasks), buffer, view, hashed)))

    buffer, filled, received = bytearray(part_size), 0, 0
    try:
        async for chunk in response.content.iter_any():
            received += len(chunk)
            if received > limit:
                raise too_large(received, limit)
            stall.check(received)
            view = memoryview(chunk)
            while view:
                take = min(part_size - filled, len(view))
                buffer[filled : filled + take] = view[:take]  # the one copy a byte gets here
                filled, view = filled + take, view[take:]
                if filled == part_size:
                    await send(buffer, filled)
                    buffer, filled = (free.pop() if free else bytearray(part_size)), 0
            if failed.is_set():
                break
        else:
            if filled or (not tasks and first == 1):
                await send(buffer, filled)
        return list(await asyncio.gather(*tasks))
    except (aiohttp.ClientError, TimeoutError) as exc:
        await asyncio.gather(*tasks, return_exceptions=True)  # keep what finished, for resume
        if isinstance(exc, aiohttp.ClientPayloadError):
            raise SourceError(
                f"source ended the body after {received} bytes, short of the length it declared"
                f" ({exc})",
                reason="source_truncated",
            ) from exc
        raise
    finally:
        for task in tasks:
            task.cancel()


async def _complete(
    s3: S3Client,
    bucket: str,
    key: str,
    upload_id: str,
    parts: list[Part],
    ledger: PartLedger,
    lease: Lease,
    size: int,
    resume_count: int,
) -> StoredObject:
    completed: list[CompletedPartTypeDef] = [
        {
            "PartNumber": p.number,
            "ETag": p.etag,
            "ChecksumSHA256": base64.b64encode(p.sha256).decode(),
        }
        for p in parts
    ]
    await lease.check()
    await s3.complete_multipart_upload(
        Bucket=bucket, Key=key, UploadId=upload_id, MultipartUpload={"Parts": completed}
    )
    await ledger.forget(upload_id)
    checksum = composite_checksum(parts)
    head = await s3.head_object(Bucket=bucket, Key=key, ChecksumMode="ENABLED")
    stored_checksum = head.get("ChecksumSHA256")
    if head["ContentLength"] != size or (
        stored_checksum and stored_checksum.split("-")[0] != checksum.split("-")[0]
    ):
        await lease.check()
        await s3.delete_object(Bucket=bucket, Key=key)
        raise IntegrityError(
            f"s3://{bucket}/{key} holds {head['ContentLength']} bytes with checksum"
            f" {stored_checksum}, expected {size} bytes with {checksum}; deleted"
        )
    return StoredObject(key, size, checksum, len(parts), resume_count)
