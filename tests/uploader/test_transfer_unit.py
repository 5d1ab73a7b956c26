"""The copy into S3, in process: exact bytes in parts of the right size, each part's SHA-256 and
the object's composite checksum checked, resume after an interrupted attempt (the parts S3 holds
and the ledger vouches for, the original part size, a Range request for the rest), a fresh
upload when resuming is not safe, and the integrity check that deletes a wrong object.

The source is a real HTTP server in this process (`RecordingSource`, plus a few odd answers
below); S3 is `FakeS3`, a model of the multipart API that checks each part's checksum and
computes the composite one as S3 does. tests/uploader/test_transfer.py runs the same copy
against real S3 (moto, or MinIO) and PostgreSQL.
"""

from __future__ import annotations

import asyncio
import base64
import gzip
import hashlib
import io
import socket
import struct
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import aiohttp
import pytest
import structlog
from botocore.exceptions import ClientError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from notetaker.common.s3 import S3Client
from notetaker.common.source_policy import SourcePolicy
from notetaker.devstack.asgi import InLoopServer
from notetaker.devstack.sources import Fault, RecordingSource
from notetaker.devstack.stack import free_port
from notetaker.uploader.transfer import (
    S3_MAX_PARTS,
    IntegrityError,
    Lease,
    Part,
    PartBody,
    SourceError,
    StoredObject,
    abort_unfinished,
    composite_checksum,
    part_size_for,
    source_session,
    stream_to_s3,
)

PART = 16 * 1024
DATA = bytes(range(256)) * 195 + b"tail"  # 49,924 bytes: three whole parts and a short one
KEY = "meeting-recordings/o/u/r/video.mp4"
MIB = 1024 * 1024

LOOPBACK = SourcePolicy(allow_loopback=True)  # the test sources listen on loopback


def composite(data: bytes, part_size: int = PART) -> str:
    """S3's checksum of a multipart object: base64(SHA-256 of the parts' SHA-256s)-parts."""
    digests = [
        hashlib.sha256(data[i : i + part_size]).digest() for i in range(0, len(data), part_size)
    ] or [hashlib.sha256(b"").digest()]
    return f"{base64.b64encode(hashlib.sha256(b''.join(digests)).digest()).decode()}-{len(digests)}"


# --- S3 and the ledger --------------------------------------------------------------------------


@dataclass
class Upload:
    key: str
    initiated: datetime
    args: dict[str, Any]
    parts: dict[int, tuple[bytes, str, bytes]] = field(default_factory=dict)  # data, etag, sha


@dataclass
class FakeS3:
    """S3's multipart upload as far as the copy uses it, with faults to inject."""

    objects: dict[str, tuple[bytes, str]] = field(default_factory=dict)  # key: data, checksum
    etags: dict[str, str] = field(default_factory=dict)  # key: the object's ETag
    uploads: dict[str, Upload] = field(default_factory=dict)
    page_size: int = 2  # list_parts answers in pages, as S3 does past 1,000 parts
    fail_complete: int = 0  # complete_multipart_upload fails this many times
    tamper: Callable[[bytes], bytes] | None = None  # what S3 "stores" instead
    wrong_checksum: bool = False
    no_checksum: bool = False  # an S3 that keeps no additional checksums (older MinIO)
    deleted: list[str] = field(default_factory=list)
    before_delete: Callable[[FakeS3], None] | None = None  # what lands just before a DELETE
    part_delay: float = 0.0  # each part takes this long to upload
    fail_part: int | None = None  # this part's upload fails, after fail_delay
    fail_delay: float = 0.0
    in_flight: int = 0
    most_in_flight: int = 0
    _ids: int = 0

    @staticmethod
    def _bucket(name: str) -> None:
        if name != "bk":
            raise ValueError(f"NoSuchBucket: {name!r}")

    def _upload(self, bucket: str, key: str, upload_id: str) -> Upload:
        self._bucket(bucket)
        upload = self.uploads.get(upload_id)
        if upload is None or upload.key != key:
            raise s3_error("NoSuchUpload", f"{upload_id} of {key!r}")
        return upload

    def start_upload(self, key: str, initiated: datetime | None = None) -> str:
        self._ids += 1
        upload_id = f"upload-{self._ids}"
        when = initiated or datetime(2026, 1, 1, tzinfo=UTC) + timedelta(minutes=self._ids)
        self.uploads[upload_id] = Upload(key, when, {})
        return upload_id

    async def list_multipart_uploads(self, *, Bucket: str, Prefix: str) -> dict[str, Any]:
        self._bucket(Bucket)
        found = [
            {"Key": u.key, "UploadId": i, "Initiated": u.initiated}
            for i, u in self.uploads.items()
            if u.key.startswith(Prefix)
        ]
        return {"Uploads": found} if found else {}

    async def create_multipart_upload(
        self, *, Bucket: str, Key: str, **args: Any
    ) -> dict[str, str]:
        self._bucket(Bucket)
        upload_id = self.start_upload(Key)
        self.uploads[upload_id].args = args
        return {"UploadId": upload_id}

    async def upload_part(
        self,
        *,
        Bucket: str,
        Key: str,
        UploadId: str,
        PartNumber: int,
        Body: Any,
        ChecksumSHA256: str,
    ) -> dict[str, str]:
        upload = self._upload(Bucket, Key, UploadId)
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            await asyncio.sleep(self.part_delay)
            if PartNumber == self.fail_part:
                await asyncio.sleep(self.fail_delay)
                raise ConnectionError(f"S3 dropped part {PartNumber}")
        finally:
            self.in_flight -= 1
        data = Body.read()
        digest = hashlib.sha256(data).digest()
        if base64.b64decode(ChecksumSHA256) != digest:
            raise ValueError("BadDigest: the part's checksum does not match its bytes")
        etag = f'"{hashlib.md5(data).hexdigest()}"'  # noqa: S324 - S3's ETag
        upload.parts[PartNumber] = (data, etag, digest)
        return {"ETag": etag}

    async def list_parts(
        self, *, Bucket: str, Key: str, UploadId: str, PartNumberMarker: int
    ) -> dict[str, Any]:
        self._upload(Bucket, Key, UploadId)
        numbers = sorted(n for n in self.uploads[UploadId].parts if n > PartNumberMarker)
        page = numbers[: self.page_size]
        parts = [
            {
                "PartNumber": n,
                "Size": len(self.uploads[UploadId].parts[n][0]),
                "ETag": self.uploads[UploadId].parts[n][1],
            }
            for n in page
        ]
        more = len(numbers) > len(page)
        answer: dict[str, Any] = {"IsTruncated": more}
        if parts:  # S3 leaves "Parts" out of a page without any
            answer["Parts"] = parts
        if more:
            answer["NextPartNumberMarker"] = page[-1]
        return answer

    async def abort_multipart_upload(self, *, Bucket: str, Key: str, UploadId: str) -> None:
        self._upload(Bucket, Key, UploadId)
        del self.uploads[UploadId]

    async def complete_multipart_upload(
        self, *, Bucket: str, Key: str, UploadId: str, MultipartUpload: dict[str, Any]
    ) -> dict[str, str]:
        if self.fail_complete:
            self.fail_complete -= 1
            raise ConnectionError("S3 went away before completing")
        upload = self._upload(Bucket, Key, UploadId)
        listed = MultipartUpload["Parts"]
        assert [p["PartNumber"] for p in listed] == list(range(1, len(listed) + 1))
        for p in listed:
            data, etag, digest = upload.parts[p["PartNumber"]]
            if p["ETag"] != etag or base64.b64decode(p["ChecksumSHA256"]) != digest:
                raise ValueError("InvalidPart")
        data = b"".join(upload.parts[p["PartNumber"]][0] for p in listed)
        digests = b"".join(upload.parts[p["PartNumber"]][2] for p in listed)
        checksum = f"{base64.b64encode(hashlib.sha256(digests).digest()).decode()}-{len(listed)}"
        if self.tamper is not None:
            data = self.tamper(data)
        if self.wrong_checksum:
            checksum = (
                f"{base64.b64encode(hashlib.sha256(b'other').digest()).decode()}-{len(listed)}"
            )
        self.objects[Key] = (data, checksum)
        part_md5s = b"".join(
            hashlib.md5(upload.parts[p["PartNumber"]][0]).digest()  # noqa: S324
            for p in listed
        )
        self.etags[Key] = f'"{hashlib.md5(part_md5s).hexdigest()}-{len(listed)}"'  # noqa: S324
        del self.uploads[UploadId]
        return {"ETag": self.etags[Key]}

    async def head_object(self, *, Bucket: str, Key: str, ChecksumMode: str = "") -> dict[str, Any]:
        self._bucket(Bucket)
        data, checksum = self.objects[Key]
        head: dict[str, Any] = {"ContentLength": len(data)}
        if ChecksumMode == "ENABLED" and not self.no_checksum:
            head["ChecksumSHA256"] = checksum
        return head

    async def delete_object(self, *, Bucket: str, Key: str, IfMatch: str | None = None) -> None:
        self._bucket(Bucket)
        if self.before_delete is not None:
            self.before_delete(self)
        if Key not in self.objects:
            raise s3_error("NoSuchKey", Key)
        if IfMatch is not None and IfMatch != self.etags[Key]:
            raise s3_error("PreconditionFailed", f"{Key} is not {IfMatch}")
        del self.objects[Key]
        self.deleted.append(Key)

    def client(self) -> S3Client:
        return cast(S3Client, self)


def s3_error(code: str, message: str) -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": message}}, "FakeS3")


@dataclass
class MemoryLedger:
    digests: dict[str, dict[int, tuple[int, bytes]]] = field(default_factory=dict)
    given_up: set[str] = field(default_factory=set)
    fenced_out: bool = False  # the lease is another worker's now: abandon() refuses

    async def record(self, upload_id: str, part: Part) -> None:
        self.digests.setdefault(upload_id, {})[part.number] = (part.size, part.sha256)

    async def parts(self, upload_id: str) -> dict[int, tuple[int, bytes]]:
        return dict(self.digests.get(upload_id, {}))

    async def forget(self, upload_id: str) -> None:
        self.digests.pop(upload_id, None)

    async def abandon(self, upload_id: str) -> None:
        if self.fenced_out:
            raise Lost(f"not giving {upload_id} up: the lease is another worker's")
        self.given_up.add(upload_id)

    async def abandoned(self, upload_ids: list[str]) -> set[str]:
        return self.given_up & set(upload_ids)


@dataclass
class SlowLedger(MemoryLedger):
    """Writes a part down as PostgreSQL does: after a round trip, while the copy goes on."""

    async def record(self, upload_id: str, part: Part) -> None:
        await asyncio.sleep(0.005)
        await super().record(upload_id, part)


# --- sources ------------------------------------------------------------------------------------


@dataclass
class OddSource:
    """Answers a provider's file server should not give, and records what it was asked."""

    data: bytes = DATA
    headers_seen: list[dict[str, str]] = field(default_factory=list)
    port: int = field(default_factory=free_port)

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.port}/{name}"

    async def serve(self, request: Request) -> Response:
        self.headers_seen.append(dict(request.headers))
        name = request.path_params["name"]
        total = len(self.data)
        start = int((request.headers.get("range") or "bytes=0-")[6:].rstrip("-") or 0)
        if name == "wrong-start":  # a 206 from another offset than asked
            body = self.data
            return Response(body, 206, {"content-range": f"bytes 0-{total - 1}/{total}"})
        if name == "no-range":  # a 206 that does not say which range
            return Response(self.data[start:], 206)
        if name == "long-error":
            return Response(b"x" * 1000, 403)
        if name == "stall":  # headers and a first chunk, then nothing for longer than allowed

            async def stalled() -> AsyncIterator[bytes]:
                yield self.data[:1000]
                await asyncio.sleep(3)

            return StreamingResponse(stalled(), 200)
        if name == "garbled-range":
            return Response(self.data[start:], 206, {"content-range": f"bytes {start}-/{total}"})
        if name == "short-total":  # a range of a file longer than what it sends
            body = self.data[start:]
            return Response(body, 206, {"content-range": f"bytes {start}-{total}/{total + 10}"})
        if name == "gzip":
            return Response(gzip.compress(self.data), 200, {"content-encoding": "gzip"})
        if name == "chunked":

            async def chunks() -> AsyncIterator[bytes]:
                for i in range(0, total, 5000):
                    yield self.data[i : i + 5000]

            return StreamingResponse(chunks(), 200)
        return Response(b"nothing here", 404)


@pytest.fixture(scope="module")
async def file_server() -> AsyncIterator[RecordingSource]:
    source = RecordingSource(chunk_size=7000)
    await source.start()
    yield source
    await source.stop()


@pytest.fixture
def files(file_server: RecordingSource) -> RecordingSource:
    """The provider's file server, serving DATA as video.mp4 and nothing odd yet."""
    file_server.files.clear()
    file_server.faults.clear()
    file_server.requests.clear()
    file_server.files["video.mp4"] = DATA
    return file_server


@pytest.fixture(scope="module")
async def odd_server() -> AsyncIterator[OddSource]:
    source = OddSource()
    server = InLoopServer(Starlette(routes=[Route("/{name}", source.serve)]), source.port)
    await server.start()
    yield source
    await server.stop()


@pytest.fixture
def odd(odd_server: OddSource) -> OddSource:
    odd_server.data = DATA
    odd_server.headers_seen.clear()
    return odd_server


async def copy(
    s3: FakeS3,
    url: str,
    *,
    ledger: MemoryLedger | None = None,
    part_size: int = PART,
    parts_in_flight: int = 2,
    progress_every_seconds: float = 3600.0,
    read_timeout: float = 5.0,
    lease: Lease | None = None,
) -> StoredObject:
    async with source_session(read_timeout, LOOPBACK) as http:
        return await stream_to_s3(
            http,
            s3.client(),
            url=url,
            bucket="bk",
            key=KEY,
            content_type="video/mp4",
            part_size=part_size,
            parts_in_flight=parts_in_flight,
            ledger=ledger,
            progress_every_seconds=progress_every_seconds,
            lease=lease,
        )


async def interrupted(s3: FakeS3, files: RecordingSource, ledger: MemoryLedger, at: int) -> None:
    """A first attempt whose connection is cut after `at` bytes: it leaves its parts behind."""
    files.faults["video.mp4"] = Fault(truncate_at=at, times=1)
    with pytest.raises(SourceError) as raised:
        await copy(s3, files.url("video.mp4"), ledger=ledger)
    assert raised.value.reason == "source_truncated"


# --- part sizing --------------------------------------------------------------------------------


def test_parts_keep_their_minimum_size_until_a_file_would_need_more_than_10000() -> None:
    assert S3_MAX_PARTS == 10_000
    assert part_size_for(None, 5 * MIB) == 5 * MIB
    assert part_size_for(0, 5 * MIB) == 5 * MIB
    assert part_size_for(10_000 * 5 * MIB, 5 * MIB) == 5 * MIB
    assert part_size_for(10_000 * 5 * MIB + 1, 5 * MIB) == 5 * MIB + 1
    huge = 200 * 1024 * MIB
    assert part_size_for(huge, 5 * MIB) == -(-huge // 10_000)
    assert -(-huge // part_size_for(huge, 5 * MIB)) <= 10_000


async def test_a_file_past_the_part_limit_is_copied_in_larger_parts(
    files: RecordingSource,
) -> None:
    data = bytes(range(256)) * 79  # 20,224 bytes at a 1-byte minimum: 3-byte parts
    files.files["many.mp4"] = data
    s3 = FakeS3(page_size=1000)
    stored = await copy(s3, files.url("many.mp4"), part_size=1, parts_in_flight=8)
    assert stored.parts == -(-len(data) // 3) <= S3_MAX_PARTS
    assert s3.objects[KEY][0] == data
    assert stored.checksum == composite(data, 3)


# --- a fresh copy -------------------------------------------------------------------------------


async def test_a_copy_stores_the_exact_bytes_encrypted_with_s3s_checksum(
    files: RecordingSource,
) -> None:
    s3, ledger = FakeS3(), MemoryLedger()
    stored = await copy(s3, files.url("video.mp4"), ledger=ledger)
    assert stored == StoredObject(KEY, len(DATA), composite(DATA), 4, 0)
    assert s3.objects[KEY] == (DATA, composite(DATA))
    assert s3.uploads == {}  # completed, nothing left open
    assert ledger.digests == {}  # the ledger forgets a finished upload
    assert files.requests == [("video.mp4", None)]  # no Range on a first attempt


async def test_the_upload_asks_for_encryption_checksums_and_the_content_type(
    files: RecordingSource,
) -> None:
    s3 = FakeS3(fail_complete=1)
    with pytest.raises(ConnectionError):
        await copy(s3, files.url("video.mp4"))
    (upload,) = s3.uploads.values()
    assert upload.args == {
        "ContentType": "video/mp4",
        "ServerSideEncryption": "AES256",
        "ChecksumAlgorithm": "SHA256",
    }


@pytest.mark.parametrize(
    ("size", "parts"), [(0, 1), (1, 1), (PART, 1), (PART + 1, 2), (3 * PART, 3)]
)
async def test_part_boundaries(files: RecordingSource, size: int, parts: int) -> None:
    data = DATA[:size] if size <= len(DATA) else (DATA * 2)[:size]
    files.files["sized.mp4"] = data
    s3 = FakeS3()
    stored = await copy(s3, files.url("sized.mp4"))
    assert (stored.size_bytes, stored.parts) == (size, parts)
    assert s3.objects[KEY][0] == data
    assert stored.checksum == composite(data)


@pytest.mark.parametrize("in_flight", [1, 3])
async def test_any_number_of_parts_in_flight_gives_the_same_object(
    files: RecordingSource, in_flight: int
) -> None:
    s3 = FakeS3()
    stored = await copy(s3, files.url("video.mp4"), parts_in_flight=in_flight)
    assert (s3.objects[KEY][0], stored.checksum) == (DATA, composite(DATA))


async def test_bytes_are_stored_as_sent_never_decompressed(odd: OddSource) -> None:
    s3 = FakeS3()
    await copy(s3, odd.url("gzip"))
    assert s3.objects[KEY][0] == gzip.compress(DATA)
    assert odd.headers_seen[0]["accept-encoding"] == "identity"


async def test_a_source_that_does_not_say_its_length_is_copied_whole(odd: OddSource) -> None:
    s3 = FakeS3()
    stored = await copy(s3, odd.url("chunked"))
    assert (s3.objects[KEY][0], stored.parts) == (DATA, 4)


# --- the source fails ---------------------------------------------------------------------------


@pytest.mark.parametrize("status", [403, 404, 410, 500])
async def test_an_error_status_is_a_source_error_with_its_reason(
    files: RecordingSource, status: int
) -> None:
    files.faults["video.mp4"] = Fault(status=status)
    s3 = FakeS3()
    with pytest.raises(SourceError) as raised:
        await copy(s3, files.url("video.mp4"))
    assert raised.value.reason == f"source_http_{status}"
    assert str(raised.value) == f"source at 127.0.0.1 answered HTTP {status}"
    assert s3.uploads == {}
    assert s3.objects == {}


async def test_the_error_body_is_never_quoted(odd: OddSource) -> None:
    # A source's answer may echo the signed URL or say anything: status and host only.
    with pytest.raises(SourceError) as raised:
        await copy(FakeS3(), odd.url("missing"))
    assert str(raised.value) == "source at 127.0.0.1 answered HTTP 404"
    with pytest.raises(SourceError) as long:
        await copy(FakeS3(), odd.url("long-error"))
    assert str(long.value) == "source at 127.0.0.1 answered HTTP 403"


async def test_a_source_that_stops_short_of_its_length_is_a_truncation(
    files: RecordingSource,
) -> None:
    files.faults["video.mp4"] = Fault(truncate_at=20_000, delay_per_chunk=0.002)
    s3 = FakeS3()
    with pytest.raises(SourceError) as raised:
        await copy(s3, files.url("video.mp4"))
    assert raised.value.reason == "source_truncated"
    assert "after 20000 bytes, short of the length it declared" in str(raised.value)
    assert KEY not in s3.objects  # a short copy is never a recording
    (upload,) = s3.uploads.values()
    assert sorted(upload.parts) == [1]  # the whole part is kept for a resume


async def test_an_unreachable_source_is_a_source_error() -> None:
    with socket.socket() as bound:  # bound, never listening: a connection is refused
        bound.bind(("127.0.0.1", 0))
        port = bound.getsockname()[1]
        with pytest.raises(SourceError) as raised:
            await copy(FakeS3(), f"http://127.0.0.1:{port}/video.mp4")
    assert raised.value.reason == "source_read"
    assert str(raised.value) == (
        "reading the source at 127.0.0.1 failed: ClientConnectorError (Connect call failed"
        f" ('127.0.0.1', {port}))"
    )


async def drops_the_connection(reset: bool) -> asyncio.Server:
    """A source that reads the request and answers nothing: it resets the connection (RST), or
    closes it cleanly."""

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        if reset:
            linger = struct.pack("ii", 1, 0)  # close at once with a reset, no FIN
            writer.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger)
            writer.transport.abort()
        else:
            writer.close()

    return await asyncio.start_server(answer, "127.0.0.1", 0)


@pytest.mark.parametrize(
    ("reset", "why"),
    [(True, "ClientOSError (Connection reset by peer)"), (False, "ServerDisconnectedError")],
    ids=["reset", "hung up"],
)
async def test_a_source_that_drops_the_connection_says_how_and_never_the_url(
    reset: bool, why: str
) -> None:
    server = await drops_the_connection(reset)
    port = server.sockets[0].getsockname()[1]
    try:
        with pytest.raises(SourceError) as raised:
            await copy(FakeS3(), f"http://127.0.0.1:{port}/video.mp4?X-Amz-Signature=s3cr3t")
    finally:
        server.close()
        await server.wait_closed()
    assert raised.value.reason == "source_read"
    assert str(raised.value) == f"reading the source at 127.0.0.1 failed: {why}"


def test_a_source_error_says_why_in_a_bounded_label() -> None:
    assert SourceError("x").reason == "source_read"
    assert SourceError("x", reason="source_http_403").reason == "source_http_403"
    assert str(SourceError("what happened")) == "what happened"


# --- resume -------------------------------------------------------------------------------------


async def test_an_interrupted_copy_resumes_from_the_parts_s3_holds(
    files: RecordingSource,
) -> None:
    s3, ledger = FakeS3(), MemoryLedger()
    await interrupted(s3, files, ledger, at=40_000)  # two whole parts made it
    (upload_id,) = s3.uploads
    assert sorted(ledger.digests[upload_id]) == [1, 2]
    with structlog.testing.capture_logs() as logs:
        stored = await copy(s3, files.url("video.mp4"), ledger=ledger)
    assert stored == StoredObject(KEY, len(DATA), composite(DATA), 4, 2)
    assert s3.objects[KEY][0] == DATA
    assert files.requests[-1] == ("video.mp4", f"bytes={2 * PART}-")
    assert (s3.uploads, ledger.digests) == ({}, {})
    (resumed,) = [line for line in logs if line["event"] == "upload.resumed"]
    assert resumed == {
        "event": "upload.resumed",
        "log_level": "info",
        "key": KEY,
        "parts_done": 2,
        "offset": 2 * PART,
        "total": len(DATA),
    }


async def test_a_resume_keeps_the_original_part_size(files: RecordingSource) -> None:
    s3, ledger = FakeS3(), MemoryLedger()
    await interrupted(s3, files, ledger, at=40_000)
    (_upload_id,) = s3.uploads
    (_upload,) = s3.uploads.values()
    stored = await copy(s3, files.url("video.mp4"), ledger=ledger, part_size=2 * PART)
    assert stored.checksum == composite(DATA, PART)  # every part at the first attempt's size
    assert stored.parts == 4


async def test_only_parts_the_ledger_vouches_for_are_kept(files: RecordingSource) -> None:
    s3, ledger = FakeS3(), MemoryLedger()
    await interrupted(s3, files, ledger, at=40_000)
    (upload_id,) = s3.uploads
    del ledger.digests[upload_id][2]  # part 2 was stored but its digest never written down
    stored = await copy(s3, files.url("video.mp4"), ledger=ledger)
    assert stored.resumed_parts == 1
    assert files.requests[-1] == ("video.mp4", f"bytes={PART}-")
    assert (s3.objects[KEY][0], stored.checksum) == (DATA, composite(DATA))


async def test_a_part_whose_size_disagrees_with_the_ledger_is_not_kept(
    files: RecordingSource,
) -> None:
    s3, ledger = FakeS3(), MemoryLedger()
    await interrupted(s3, files, ledger, at=40_000)
    (upload_id,) = s3.uploads
    size, digest = ledger.digests[upload_id][2]
    ledger.digests[upload_id][2] = (size - 1, digest)
    stored = await copy(s3, files.url("video.mp4"), ledger=ledger)
    assert stored.resumed_parts == 1
    assert s3.objects[KEY][0] == DATA


async def test_no_part_vouched_for_means_a_fresh_upload(files: RecordingSource) -> None:
    s3, ledger = FakeS3(), MemoryLedger()
    await interrupted(s3, files, ledger, at=40_000)
    (old,) = s3.uploads
    del ledger.digests[old][1]
    stored = await copy(s3, files.url("video.mp4"), ledger=ledger)
    assert stored.resumed_parts == 0
    assert files.requests[-1] == ("video.mp4", None)
    assert old not in s3.uploads
    assert old not in ledger.digests
    assert s3.objects[KEY][0] == DATA


async def test_parts_of_mixed_sizes_are_not_continued(files: RecordingSource) -> None:
    s3, ledger = FakeS3(), MemoryLedger()
    await interrupted(s3, files, ledger, at=49_500)  # three whole parts made it
    (upload_id,) = s3.uploads
    upload = s3.uploads[upload_id]
    assert sorted(upload.parts) == [1, 2, 3]
    short = upload.parts[2][0][:-1]  # part 2 one byte shorter than part 1
    etag = f'"{hashlib.md5(short).hexdigest()}"'  # noqa: S324
    upload.parts[2] = (short, etag, hashlib.sha256(short).digest())
    ledger.digests[upload_id][2] = (len(short), hashlib.sha256(short).digest())
    stored = await copy(s3, files.url("video.mp4"), ledger=ledger)
    assert stored.resumed_parts == 0
    assert files.requests[-1] == ("video.mp4", None)
    assert upload_id not in s3.uploads
    assert s3.objects[KEY][0] == DATA


async def test_a_short_part_last_among_those_kept_is_continued(files: RecordingSource) -> None:
    s3, ledger = FakeS3(), MemoryLedger()
    await interrupted(s3, files, ledger, at=40_000)
    (upload_id,) = s3.uploads
    upload = s3.uploads[upload_id]
    short = upload.parts[2][0][:-1]
    etag = f'"{hashlib.md5(short).hexdigest()}"'  # noqa: S324
    upload.parts[2] = (short, etag, hashlib.sha256(short).digest())
    ledger.digests[upload_id][2] = (len(short), hashlib.sha256(short).digest())
    stored = await copy(s3, files.url("video.mp4"), ledger=ledger)
    assert stored.resumed_parts == 2
    assert files.requests[-1] == ("video.mp4", f"bytes={2 * PART - 1}-")
    assert s3.objects[KEY][0] == DATA


async def test_a_last_part_shorter_than_the_others_still_resumes(files: RecordingSource) -> None:
    s3, ledger = FakeS3(fail_complete=1), MemoryLedger()
    with pytest.raises(ConnectionError):  # every part stored, the completion lost
        await copy(s3, files.url("video.mp4"), ledger=ledger)
    stored = await copy(s3, files.url("video.mp4"), ledger=ledger)
    # nothing left to read: the source answers 416 and the upload is completed as it is
    assert files.requests[-1] == ("video.mp4", f"bytes={len(DATA)}-")
    assert stored == StoredObject(KEY, len(DATA), composite(DATA), 4, 4)
    assert s3.objects[KEY][0] == DATA
    assert (s3.uploads, ledger.digests) == ({}, {})


async def test_the_newest_unfinished_upload_is_resumed_and_older_ones_aborted(
    files: RecordingSource,
) -> None:
    s3, ledger = FakeS3(), MemoryLedger()
    stale = s3.start_upload(KEY, datetime(2025, 1, 1, tzinfo=UTC))
    ledger.digests[stale] = {}
    await interrupted(s3, files, ledger, at=40_000)
    newer = s3.start_upload(KEY, datetime(2024, 1, 1, tzinfo=UTC))  # initiated earliest
    other_key = s3.start_upload(KEY + ".bak")  # same prefix, another object: not ours
    stored = await copy(s3, files.url("video.mp4"), ledger=ledger)
    assert stored.resumed_parts == 2
    assert set(s3.uploads) == {other_key}
    assert stale not in ledger.digests
    assert newer not in s3.uploads


async def test_a_source_that_ignores_ranges_gets_a_fresh_upload(files: RecordingSource) -> None:
    s3, ledger = FakeS3(), MemoryLedger()
    await interrupted(s3, files, ledger, at=40_000)
    (old,) = s3.uploads
    files.faults["video.mp4"] = Fault(ignore_ranges=True)
    stored = await copy(s3, files.url("video.mp4"), ledger=ledger)
    assert stored == StoredObject(KEY, len(DATA), composite(DATA), 4, 0)
    assert old not in s3.uploads
    assert ledger.digests == {}
    assert s3.objects[KEY][0] == DATA


@pytest.mark.parametrize("name", ["wrong-start", "garbled-range", "no-range"])
async def test_a_range_answer_that_does_not_continue_the_upload_is_refused(
    files: RecordingSource, odd: OddSource, name: str
) -> None:
    s3, ledger = FakeS3(), MemoryLedger()
    await interrupted(s3, files, ledger, at=40_000)
    with pytest.raises(SourceError) as raised:
        await copy(s3, odd.url(name), ledger=ledger)
    assert raised.value.reason == "source_http_206"
    assert odd.headers_seen[-1]["range"] == f"bytes={2 * PART}-"
    assert KEY not in s3.objects


async def test_a_resumed_source_that_sends_less_than_its_declared_total_fails(
    files: RecordingSource, odd: OddSource
) -> None:
    s3, ledger = FakeS3(), MemoryLedger()
    await interrupted(s3, files, ledger, at=40_000)
    with pytest.raises(SourceError) as raised:
        await copy(s3, odd.url("short-total"), ledger=ledger)
    assert raised.value.reason == "source_truncated"
    assert (
        str(raised.value) == f"source sent {len(DATA)} bytes in all but declared {len(DATA) + 10}"
    )
    assert KEY not in s3.objects


async def test_abandoning_a_recording_aborts_its_uploads_only(files: RecordingSource) -> None:
    s3, ledger = FakeS3(), MemoryLedger()
    await interrupted(s3, files, ledger, at=40_000)
    s3.start_upload(KEY)
    other = s3.start_upload(KEY + ".bak")
    assert await abort_unfinished(s3.client(), "bk", KEY, ledger) == 2
    assert set(s3.uploads) == {other}
    assert ledger.digests == {}
    assert await abort_unfinished(s3.client(), "bk", KEY, ledger) == 0


# --- integrity ----------------------------------------------------------------------------------


def test_the_composite_checksum_is_s3s() -> None:
    parts = [
        Part(1, PART, "e1", hashlib.sha256(DATA[:PART]).digest()),
        Part(2, len(DATA) - PART, "e2", hashlib.sha256(DATA[PART:]).digest()),
    ]
    expected = base64.b64encode(hashlib.sha256(parts[0].sha256 + parts[1].sha256).digest())
    assert composite_checksum(parts) == f"{expected.decode()}-2"


@pytest.mark.parametrize(
    "tamper", [lambda b: b[:-1], lambda b: b + b"x"], ids=["a byte short", "a byte long"]
)
async def test_an_object_of_the_wrong_size_is_deleted_and_refused(
    files: RecordingSource, tamper: Callable[[bytes], bytes]
) -> None:
    s3, ledger = FakeS3(tamper=tamper), MemoryLedger()
    with pytest.raises(IntegrityError) as raised:
        await copy(s3, files.url("video.mp4"), ledger=ledger)
    assert s3.deleted == [KEY]
    assert KEY not in s3.objects
    assert str(raised.value).startswith(f"s3://bk/{KEY} holds {len(tamper(DATA))} bytes")
    assert f"expected {len(DATA)} bytes with {composite(DATA)}; deleted" in str(raised.value)


async def test_an_object_with_another_checksum_is_deleted_and_refused(
    files: RecordingSource,
) -> None:
    s3 = FakeS3(wrong_checksum=True)
    with pytest.raises(IntegrityError):
        await copy(s3, files.url("video.mp4"))
    assert s3.deleted == [KEY]


async def test_the_checksum_is_compared_without_its_part_count(files: RecordingSource) -> None:
    s3 = FakeS3()
    original = s3.complete_multipart_upload

    async def without_count(**kwargs: Any) -> dict[str, str]:
        answer = await original(**kwargs)
        data, checksum = s3.objects[KEY]
        s3.objects[KEY] = (data, checksum.split("-")[0])  # as some S3s answer it
        return answer

    s3.complete_multipart_upload = without_count  # type: ignore[method-assign]
    stored = await copy(s3, files.url("video.mp4"))
    assert stored.checksum == composite(DATA)
    assert s3.deleted == []


async def test_an_s3_without_checksums_is_checked_by_size(files: RecordingSource) -> None:
    s3 = FakeS3(no_checksum=True)
    assert (await copy(s3, files.url("video.mp4"))).checksum == composite(DATA)
    tampered = FakeS3(no_checksum=True, tamper=lambda b: b[:-1])
    with pytest.raises(IntegrityError):
        await copy(tampered, files.url("video.mp4"))


# --- progress in the log ------------------------------------------------------------------------


async def test_progress_is_logged_after_each_part_once_the_interval_passed(
    files: RecordingSource,
) -> None:
    with structlog.testing.capture_logs() as logs:
        await copy(FakeS3(), files.url("video.mp4"), parts_in_flight=1, progress_every_seconds=0.0)
    progress = [line for line in logs if line["event"] == "upload.progress"]
    assert [p["parts_stored"] for p in progress] == [1, 2, 3, 4]
    assert [p["bytes_stored"] for p in progress] == [PART, 2 * PART, 3 * PART, len(DATA)]
    assert progress[-1]["percent"] == 100.0
    assert progress[0]["percent"] == round(100 * PART / len(DATA), 1)
    assert {p["total_bytes"] for p in progress} == {len(DATA)}
    assert {p["key"] for p in progress} == {KEY}
    assert all(p["mib_per_second"] >= 0 for p in progress)
    with structlog.testing.capture_logs() as quiet:
        await copy(FakeS3(), files.url("video.mp4"), progress_every_seconds=3600.0)
    assert not [line for line in quiet if line["event"] == "upload.progress"]


async def test_progress_of_a_resumed_copy_counts_the_resumed_bytes(
    files: RecordingSource,
) -> None:
    s3, ledger = FakeS3(), MemoryLedger()
    await interrupted(s3, files, ledger, at=40_000)
    with structlog.testing.capture_logs() as logs:
        await copy(
            s3, files.url("video.mp4"), ledger=ledger, parts_in_flight=1, progress_every_seconds=0.0
        )
    progress = [line for line in logs if line["event"] == "upload.progress"]
    assert [(p["parts_stored"], p["bytes_stored"]) for p in progress] == [
        (3, 3 * PART),
        (4, len(DATA)),
    ]


async def test_progress_without_a_known_length_has_no_percent(odd: OddSource) -> None:
    with structlog.testing.capture_logs() as logs:
        await copy(FakeS3(), odd.url("chunked"), progress_every_seconds=0.0)
    progress = [line for line in logs if line["event"] == "upload.progress"]
    assert progress
    assert all(p["percent"] is None and p["total_bytes"] is None for p in progress)


# --- a part as a request body -------------------------------------------------------------------


def test_a_part_body_reads_seeks_and_rewinds_like_a_file() -> None:
    body = PartBody(memoryview(b"0123456789"))
    assert len(body) == 10
    assert (body.read(3), body.tell()) == (b"012", 3)
    assert body.read(100) == b"3456789"
    assert body.read() == b""
    assert body.seek(0) == 0
    assert body.read() == b"0123456789"
    assert body.seek(-2, io.SEEK_END) == 8
    assert body.read(-1) == b"89"
    body.seek(2)
    assert body.seek(3, io.SEEK_CUR) == 5
    assert body.seek(-50) == 0
    assert body.seek(50) == 10
    assert body.decode() == "0123456789"


class Writer:
    def __init__(self) -> None:
        self.writes: list[bytes] = []

    async def write(self, chunk: bytes | bytearray | memoryview) -> None:
        self.writes.append(bytes(chunk))


async def test_a_part_body_is_sent_in_slices() -> None:
    data = bytes(range(256)) * 2500  # 640,000 bytes: two whole slices and a short one
    writer = Writer()
    await PartBody(memoryview(data)).write(writer)  # type: ignore[arg-type]
    assert [len(w) for w in writer.writes] == [
        PartBody.SLICE,
        PartBody.SLICE,
        640_000 - 2 * PartBody.SLICE,
    ]
    assert b"".join(writer.writes) == data
    limited = Writer()
    await PartBody(memoryview(data)).write_with_length(limited, 300_000)  # type: ignore[arg-type]
    assert b"".join(limited.writes) == data[:300_000]
    assert [len(w) for w in limited.writes] == [PartBody.SLICE, 300_000 - PartBody.SLICE]


def test_a_part_body_declares_its_length_and_reads_nothing_for_zero() -> None:
    body = PartBody(memoryview(b"0123456789"))
    assert body.size == 10  # what aiohttp sends as Content-Length
    body.seek(4)
    assert body.read(0) == b""
    assert body.tell() == 4
    with pytest.raises(UnicodeDecodeError):
        PartBody(memoryview(b"\xff\xfe")).decode()


# --- a source that trickles, stalls, or S3 that fails a part -----------------------------------


async def test_a_source_that_trickles_in_small_chunks_is_cut_into_whole_parts(
    files: RecordingSource,
) -> None:
    files.faults["video.mp4"] = Fault(delay_per_chunk=0.002)  # 7,000 bytes at a time
    s3 = FakeS3()
    stored = await copy(s3, files.url("video.mp4"))
    assert stored == StoredObject(KEY, len(DATA), composite(DATA), 4, 0)
    (data, _) = s3.objects[KEY]
    assert data == DATA


async def test_a_source_that_stalls_fails_after_the_read_timeout(odd: OddSource) -> None:
    task = asyncio.ensure_future(copy(FakeS3(), odd.url("stall"), read_timeout=0.2))
    done, _ = await asyncio.wait({task}, timeout=10)
    if not done:
        task.cancel()
        pytest.fail("a stalled source was waited for past its read timeout")
    with pytest.raises(SourceError) as raised:
        task.result()
    assert raised.value.reason == "source_read"
    assert str(raised.value) == "reading the source at 127.0.0.1 failed: SocketTimeoutError"


async def test_the_source_session_bounds_connect_and_read_but_not_the_transfer() -> None:
    async with source_session(7.5, LOOPBACK) as http:
        assert http.timeout == aiohttp.ClientTimeout(total=None, sock_connect=10, sock_read=7.5)
        assert http.auto_decompress is False


@pytest.mark.parametrize("in_flight", [1, 2, 3])
async def test_no_more_parts_are_in_flight_than_allowed(
    files: RecordingSource, in_flight: int
) -> None:
    files.files["long.mp4"] = DATA * 3  # ten parts
    s3 = FakeS3(part_delay=0.03)
    await copy(s3, files.url("long.mp4"), parts_in_flight=in_flight)
    assert 1 <= s3.most_in_flight <= in_flight  # bounded memory: parts in flight, not the file
    assert s3.objects[KEY][0] == DATA * 3


async def test_a_ledger_that_takes_its_time_does_not_hold_up_the_parts(
    files: RecordingSource,
) -> None:
    # A part's buffer goes back for the next part once S3 has answered, while its digest is still
    # being written down: the next part fills it meanwhile, and every part is still exact.
    files.files["long.mp4"] = DATA * 3  # ten parts through two buffers
    s3, ledger = FakeS3(), SlowLedger()
    stored = await copy(s3, files.url("long.mp4"), ledger=ledger, parts_in_flight=1)
    assert stored == StoredObject(KEY, 3 * len(DATA), composite(DATA * 3), 10, 0)
    assert s3.objects[KEY][0] == DATA * 3


@pytest.mark.parametrize("in_flight", [1, 2])
async def test_a_part_s3_refuses_fails_the_copy_with_s3s_error(
    files: RecordingSource, in_flight: int
) -> None:
    files.files["long.mp4"] = DATA * 3
    s3 = FakeS3(fail_part=2)
    task = asyncio.ensure_future(copy(s3, files.url("long.mp4"), parts_in_flight=in_flight))
    done, _ = await asyncio.wait({task}, timeout=10)
    if not done:
        task.cancel()
        pytest.fail("the copy hung after S3 refused a part")
    with pytest.raises(ConnectionError, match="S3 dropped part 2"):
        task.result()
    assert KEY not in s3.objects


async def test_a_source_cut_while_a_part_fails_reports_the_source(files: RecordingSource) -> None:
    s3, ledger = FakeS3(fail_part=2, fail_delay=1.0), MemoryLedger()
    files.faults["video.mp4"] = Fault(truncate_at=40_000)
    with pytest.raises(SourceError) as raised:
        await copy(s3, files.url("video.mp4"), ledger=ledger, parts_in_flight=2)
    assert raised.value.reason == "source_truncated"
    (upload_id,) = s3.uploads
    assert sorted(ledger.digests[upload_id]) == [1]  # what finished is kept for a resume


async def test_an_upload_without_any_part_is_replaced(files: RecordingSource) -> None:
    s3, ledger = FakeS3(), MemoryLedger()
    empty = s3.start_upload(KEY)
    stored = await copy(s3, files.url("video.mp4"), ledger=ledger)
    assert stored.resumed_parts == 0
    assert files.requests == [("video.mp4", None)]
    assert empty not in s3.uploads


async def test_abandoning_a_recording_without_uploads_aborts_nothing() -> None:
    assert await abort_unfinished(FakeS3().client(), "bk", KEY, MemoryLedger()) == 0


# --- the lease ----------------------------------------------------------------------------------


class Lost(Exception):
    """What a lease says when another worker holds the recording now."""


@dataclass
class CountedLease:
    """Holds for its first `allowed` checks (None: always), then is lost."""

    allowed: int | None = None
    checks: int = 0

    async def check(self) -> None:
        self.checks += 1
        if self.allowed is not None and self.checks > self.allowed:
            raise Lost(f"lost at check {self.checks}")


async def test_a_copy_under_a_lease_checks_it_before_starting_and_before_completing(
    files: RecordingSource,
) -> None:
    s3, ledger, lease = FakeS3(), MemoryLedger(), CountedLease()
    await copy(s3, files.url("video.mp4"), ledger=ledger, lease=lease)
    assert s3.objects[KEY][0] == DATA
    assert lease.checks == 2


async def test_a_copy_without_its_lease_starts_no_upload(files: RecordingSource) -> None:
    s3, ledger = FakeS3(), MemoryLedger()
    with pytest.raises(Lost):
        await copy(s3, files.url("video.mp4"), ledger=ledger, lease=CountedLease(allowed=0))
    assert s3.uploads == {}


async def test_a_copy_that_lost_its_lease_never_completes_and_leaves_its_parts(
    files: RecordingSource,
) -> None:
    s3, ledger = FakeS3(), MemoryLedger()
    with pytest.raises(Lost):
        await copy(s3, files.url("video.mp4"), ledger=ledger, lease=CountedLease(allowed=1))
    assert KEY not in s3.objects
    (upload,) = s3.uploads.values()
    assert sorted(upload.parts) == [1, 2, 3, 4]  # for whoever holds the lease now


async def test_a_worker_without_the_lease_aborts_no_older_upload(files: RecordingSource) -> None:
    s3, ledger = FakeS3(), MemoryLedger()
    await interrupted(s3, files, ledger, at=40_000)
    older = s3.start_upload(KEY, datetime(2024, 1, 1, tzinfo=UTC))  # initiated earliest
    uploads = set(s3.uploads)
    with pytest.raises(Lost):
        await copy(s3, files.url("video.mp4"), ledger=ledger, lease=CountedLease(allowed=0))
    assert older in uploads
    assert set(s3.uploads) == uploads


async def test_a_worker_without_the_lease_keeps_the_upload_a_fresh_one_would_replace(
    files: RecordingSource,
) -> None:
    s3, ledger = FakeS3(), MemoryLedger()
    await interrupted(s3, files, ledger, at=40_000)
    (upload_id,) = s3.uploads
    files.faults["video.mp4"] = Fault(ignore_ranges=True)
    with pytest.raises(Lost):
        await copy(s3, files.url("video.mp4"), ledger=ledger, lease=CountedLease(allowed=0))
    assert set(s3.uploads) == {upload_id}
    assert sorted(ledger.digests[upload_id]) == [1, 2]


async def test_abandoning_a_recording_without_the_lease_aborts_nothing(
    files: RecordingSource,
) -> None:
    s3, ledger = FakeS3(), MemoryLedger()
    await interrupted(s3, files, ledger, at=40_000)
    (upload_id,) = s3.uploads
    with pytest.raises(Lost):
        await abort_unfinished(s3.client(), "bk", KEY, ledger, CountedLease(allowed=0))
    assert set(s3.uploads) == {upload_id}
    assert sorted(ledger.digests[upload_id]) == [1, 2]


async def test_a_wrong_object_is_left_to_the_worker_holding_the_lease(
    files: RecordingSource,
) -> None:
    s3, ledger = FakeS3(tamper=lambda data: data[:-1]), MemoryLedger()
    with pytest.raises(Lost):
        await copy(s3, files.url("video.mp4"), ledger=ledger, lease=CountedLease(allowed=2))
    assert s3.deleted == []
    assert KEY in s3.objects


# --- a worker gone stale between its lease check and S3 ------------------------------------------
# S3 cannot fence by the lease's token, and a check that passed says nothing of the moment S3
# acts. Here the check passes, but the ledger's fenced write is refused: the lease is another
# worker's by the time the step is taken.


async def test_an_upload_given_up_is_never_resumed(files: RecordingSource) -> None:
    """A predecessor recorded the upload abandoned, and its abort has not reached S3 (or never
    will): the copy aborts it again and starts afresh, never writing into it."""
    s3, ledger = FakeS3(), MemoryLedger()
    await interrupted(s3, files, ledger, at=40_000)
    (given_up,) = s3.uploads
    ledger.given_up.add(given_up)
    stored = await copy(s3, files.url("video.mp4"), ledger=ledger)
    assert stored.resumed_parts == 0
    assert files.requests[-1] == ("video.mp4", None)
    assert (s3.objects[KEY][0], s3.uploads) == (DATA, {})


async def test_an_upload_is_recorded_given_up_before_it_is_aborted(
    files: RecordingSource,
) -> None:
    s3, ledger = FakeS3(), MemoryLedger()
    await interrupted(s3, files, ledger, at=40_000)
    (old,) = s3.uploads
    files.faults["video.mp4"] = Fault(ignore_ranges=True)  # the old upload cannot be continued
    await copy(s3, files.url("video.mp4"), ledger=ledger)
    assert old not in s3.uploads
    assert ledger.given_up == {old}


async def test_a_worker_fenced_out_after_its_check_aborts_nothing(files: RecordingSource) -> None:
    """The check passed; by the time the worker would give the upload up, a successor holds the
    lease (and may be resuming it): the abort is never sent."""
    s3, ledger = FakeS3(), MemoryLedger()
    await interrupted(s3, files, ledger, at=40_000)
    (upload_id,) = s3.uploads
    ledger.fenced_out = True
    files.faults["video.mp4"] = Fault(ignore_ranges=True)
    with pytest.raises(Lost):
        await copy(s3, files.url("video.mp4"), ledger=ledger, lease=CountedLease())
    assert set(s3.uploads) == {upload_id}
    assert sorted(ledger.digests[upload_id]) == [1, 2]
    with pytest.raises(Lost):
        await abort_unfinished(s3.client(), "bk", KEY, ledger, CountedLease())
    assert set(s3.uploads) == {upload_id}


async def test_an_upload_ended_by_another_abort_just_before_ours_is_given_up_all_the_same(
    files: RecordingSource,
) -> None:
    """The predecessor gave the upload up and its abort reaches S3 between our listing and our
    abort (or a retried abort of ours follows one whose answer was lost): S3 answers
    NoSuchUpload, which is what an abort wants."""
    s3, ledger = FakeS3(), MemoryLedger()
    await interrupted(s3, files, ledger, at=40_000)
    (upload_id,) = s3.uploads
    abort = s3.abort_multipart_upload

    async def ended_just_before(*, Bucket: str, Key: str, UploadId: str) -> None:
        s3.uploads.pop(UploadId, None)  # the other abort
        await abort(Bucket=Bucket, Key=Key, UploadId=UploadId)

    s3.abort_multipart_upload = ended_just_before  # type: ignore[method-assign]
    assert await abort_unfinished(s3.client(), "bk", KEY, ledger) == 1
    assert ledger.given_up == {upload_id}
    assert upload_id not in ledger.digests


def successor_completes(s3: FakeS3) -> None:
    s3.objects[KEY] = (DATA, composite(DATA))
    s3.etags[KEY] = '"the-successors-object-2"'


def successor_deletes(s3: FakeS3) -> None:
    del s3.objects[KEY]  # say, the successor's own delete of this same wrong object


@pytest.mark.parametrize("meanwhile", [successor_completes, successor_deletes])
async def test_a_wrong_object_replaced_or_deleted_since_is_left_alone(
    files: RecordingSource, meanwhile: Callable[[FakeS3], None]
) -> None:
    """This worker's object is wrong, and before its delete reaches S3 a successor's good
    object has replaced it (or it is gone): the delete, conditional on this completion's ETag,
    touches nothing of the successor's, and the copy still fails."""
    s3 = FakeS3(tamper=lambda data: data[:-1], before_delete=meanwhile)
    with pytest.raises(IntegrityError) as raised:
        await copy(s3, files.url("video.mp4"), ledger=MemoryLedger(), lease=CountedLease())
    assert str(raised.value).endswith(f"{composite(DATA)}; not deleted: replaced or gone since")
    assert s3.deleted == []
    if meanwhile is successor_completes:
        assert s3.objects[KEY] == (DATA, composite(DATA))
    else:
        assert KEY not in s3.objects
