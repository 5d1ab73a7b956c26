"""The copy's limits, in process: the largest recording it takes (declared or not, on a first
attempt or a resume) and the source URL policy (a URL or an address that is not public fails as
`source_forbidden` before any connection, naming the host only).

Same in-process source and S3 model as tests/uploader/test_transfer_unit.py; the real uploader
is held to the same in tests/uploader/test_bounds.py and test_forbidden_sources.py.
"""

from __future__ import annotations

import re
import socket
from collections.abc import AsyncIterator

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from notetaker.common.source_policy import SourcePolicy
from notetaker.devstack.asgi import InLoopServer
from notetaker.devstack.sources import Fault, RecordingSource
from notetaker.uploader.transfer import SourceError, StoredObject, source_session, stream_to_s3
from tests.uploader.test_transfer_unit import DATA, KEY, PART, FakeS3, MemoryLedger, OddSource

LOOPBACK = SourcePolicy(allow_loopback=True)
STRICT = SourcePolicy()
LIMIT_NOTE = "(NOTETAKER_UPLOAD_MAX_RECORDING_BYTES)"


@pytest.fixture(scope="module")
async def file_server() -> AsyncIterator[RecordingSource]:
    source = RecordingSource(chunk_size=7000)
    await source.start()
    yield source
    await source.stop()


@pytest.fixture
def files(file_server: RecordingSource) -> RecordingSource:
    file_server.files.clear()
    file_server.faults.clear()
    file_server.requests.clear()
    file_server.files["video.mp4"] = DATA
    return file_server


class LongRange(OddSource):
    """A 206 whose body runs 1,000 bytes past the range its Content-Range declares."""

    async def serve(self, request: Request) -> Response:
        if request.path_params["name"] != "long-range":
            return await super().serve(request)
        total = len(self.data)
        start = int((request.headers.get("range") or "bytes=0-")[6:].rstrip("-") or 0)
        headers = {"content-range": f"bytes {start}-{total - 1}/{total}"}
        return Response(self.data[start:] + b"x" * 1000, 206, headers)


@pytest.fixture(scope="module")
async def odd() -> AsyncIterator[LongRange]:
    source = LongRange()
    server = InLoopServer(Starlette(routes=[Route("/{name}", source.serve)]), source.port)
    await server.start()
    yield source
    await server.stop()


async def copy(
    s3: FakeS3,
    url: str,
    *,
    max_bytes: int,
    ledger: MemoryLedger | None = None,
    policy: SourcePolicy = LOOPBACK,
) -> StoredObject:
    async with source_session(5, policy) as http:
        return await stream_to_s3(
            http,
            s3.client(),
            url=url,
            bucket="bk",
            key=KEY,
            content_type="video/mp4",
            part_size=PART,
            parts_in_flight=2,
            ledger=ledger,
            max_bytes=max_bytes,
        )


async def interrupted(s3: FakeS3, files: RecordingSource, ledger: MemoryLedger) -> None:
    files.faults["video.mp4"] = Fault(truncate_at=40_000, times=1)  # two whole parts stored
    with pytest.raises(SourceError):
        await copy(s3, files.url("video.mp4"), max_bytes=len(DATA), ledger=ledger)


def over(received: str, limit: int) -> str:
    return f"the source is {received} bytes or more, over the {limit}-byte limit {LIMIT_NOTE}"


# --- the largest recording ----------------------------------------------------------------------


async def test_a_declared_length_over_the_limit_fails_before_any_upload(
    files: RecordingSource,
) -> None:
    s3 = FakeS3()
    with pytest.raises(SourceError) as raised:
        await copy(s3, files.url("video.mp4"), max_bytes=len(DATA) - 1)
    assert raised.value.reason == "source_too_large"
    assert str(raised.value) == over(str(len(DATA)), len(DATA) - 1)
    assert s3.uploads == {}


@pytest.mark.parametrize("name", ["video.mp4", "chunked"])
async def test_a_recording_of_exactly_the_limit_is_copied(
    files: RecordingSource, odd: LongRange, name: str
) -> None:
    s3 = FakeS3()
    url = files.url(name) if name == "video.mp4" else odd.url(name)
    stored = await copy(s3, url, max_bytes=len(DATA))
    assert stored.size_bytes == len(DATA)
    assert s3.objects[KEY][0] == DATA


async def test_a_body_without_a_length_fails_once_it_runs_past_the_limit(odd: LongRange) -> None:
    with pytest.raises(SourceError) as raised:
        await copy(FakeS3(), odd.url("chunked"), max_bytes=len(DATA) - 1)
    assert raised.value.reason == "source_too_large"
    pattern = re.escape(over("N", len(DATA) - 1)).replace("N", r"(\d+)", 1)
    match = re.fullmatch(pattern, str(raised.value))
    assert match is not None, str(raised.value)
    assert int(match.group(1)) > len(DATA) - 1


async def test_a_resume_of_a_source_now_declaring_more_than_the_limit_fails(
    files: RecordingSource,
) -> None:
    s3, ledger = FakeS3(), MemoryLedger()
    await interrupted(s3, files, ledger)
    with pytest.raises(SourceError) as raised:
        await copy(s3, files.url("video.mp4"), max_bytes=len(DATA) - 1, ledger=ledger)
    assert raised.value.reason == "source_too_large"
    assert str(raised.value) == over(str(len(DATA)), len(DATA) - 1)
    stored = await copy(s3, files.url("video.mp4"), max_bytes=len(DATA), ledger=ledger)
    assert stored.resumed_parts == 2


async def test_a_resumed_body_past_the_limit_counts_what_was_stored_before(
    files: RecordingSource, odd: LongRange
) -> None:
    s3, ledger = FakeS3(), MemoryLedger()
    await interrupted(s3, files, ledger)
    with pytest.raises(SourceError) as raised:
        await copy(s3, odd.url("long-range"), max_bytes=len(DATA), ledger=ledger)
    assert raised.value.reason == "source_too_large"
    assert f"over the {len(DATA) - 2 * PART}-byte limit" in str(raised.value)


# --- the source URL policy ----------------------------------------------------------------------


async def test_a_source_at_an_address_that_is_not_public_is_never_contacted(
    files: RecordingSource,
) -> None:
    s3 = FakeS3()
    with pytest.raises(SourceError) as raised:
        await copy(s3, files.url("video.mp4"), max_bytes=len(DATA), policy=STRICT)
    assert raised.value.reason == "source_forbidden"
    assert str(raised.value) == "host 127.0.0.1 is not a public address"
    assert files.requests == []
    assert s3.uploads == {}


async def test_a_name_that_leads_to_an_address_that_is_not_public_is_refused_by_host(
    files: RecordingSource,
) -> None:
    url = f"http://localhost:{files.port}/video.mp4?X-Amz-Signature=secret"
    with pytest.raises(SourceError) as raised:
        await copy(FakeS3(), url, max_bytes=len(DATA), policy=STRICT)
    assert raised.value.reason == "source_forbidden"
    assert str(raised.value) == "the source at localhost leads to what is not a public address"
    assert files.requests == []


async def test_an_unreachable_public_policy_source_is_an_ordinary_read_error() -> None:
    with socket.socket() as bound:  # bound, never listening: nothing else can take the port
        bound.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{bound.getsockname()[1]}/v.mp4"
        with pytest.raises(SourceError) as raised:
            await copy(FakeS3(), url, max_bytes=len(DATA))
    assert raised.value.reason == "source_read"
