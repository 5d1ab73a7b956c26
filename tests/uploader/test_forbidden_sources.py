"""A provider URL that leads inside the network is never fetched: the uploader (without the dev
stack's loopback opt-in) refuses it before any connection, the recording ends `failed` for good
with reason `source_forbidden`, and no stored error, event or log line carries the URL's query."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from notetaker.common.events import RecordingUploadFailed
from notetaker.devstack.services import ServiceProcess
from notetaker.devstack.stack import Stack, free_port
from tests.common.test_source_policy import Counting
from tests.conftest import eventually
from tests.e2e.conftest import events_for
from tests.uploader.conftest import recording_ready_at

SECRET = "Sig-9f8e7d6c5b4a"  # stands for the provider's presigned-URL signature


@pytest.fixture(scope="module")
async def strict_uploader(
    stack: Stack, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[ServiceProcess]:
    """An uploader as production runs it: provider URLs may reach public addresses only."""
    port = free_port()
    env = {
        "PATH": "/usr/bin:/bin",
        **stack.env(),
        "NOTETAKER_SOURCE_ALLOW_LOOPBACK": "false",
        "NOTETAKER_HTTP_PORT": str(port),
    }
    log = tmp_path_factory.mktemp("strict-uploader") / "uploader.log"
    process = ServiceProcess("uploader", env, port, log)
    process.start()
    await asyncio.to_thread(process.wait_ready)
    yield process
    process.stop()


@pytest.fixture
async def loopback() -> AsyncIterator[Counting]:
    server = Counting("127.0.0.1")
    await server.start()
    yield server
    await server.stop()


def log_lines(process: ServiceProcess, bot_id: str) -> list[dict[str, Any]]:
    lines = [json.loads(line) for line in Path(process.log_path).read_text().splitlines() if line]
    return [line for line in lines if line.get("bot_id") == bot_id]


@pytest.mark.parametrize(
    "target",
    [
        "http://127.0.0.1:{port}/video.mp4",
        "http://localhost:{port}/video.mp4",
        "http://[::ffff:127.0.0.1]:{port}/video.mp4",
        "http://169.254.169.254/latest/meta-data/iam/video.mp4",
        "http://10.0.0.7:9000/recordings/video.mp4",
    ],
)
async def test_a_recording_url_inside_the_network_fails_for_good_and_is_never_fetched(
    strict_uploader: ServiceProcess,
    stack: Stack,
    db: asyncpg.Pool,
    loopback: Counting,
    target: str,
) -> None:
    url = target.format(port=loopback.port) + f"?X-Amz-Signature={SECRET}&token={SECRET}"
    bot_id = await recording_ready_at(stack, db, url)

    async def failed() -> Any:
        row = await db.fetchrow("SELECT * FROM recordings WHERE bot_id = $1", bot_id)
        return row if row["s3_upload_status"] == "failed" else None

    row = await eventually(failed, 60, f"recording of {bot_id} to fail")
    assert loopback.connections == 0
    assert row["s3_upload_retry_count"] == 1
    assert row["s3_upload_next_retry_at"] is None  # final: asking again cannot help
    assert "not a public address" in row["s3_upload_error_message"]
    assert SECRET not in row["s3_upload_error_message"]

    failures = [
        e.event
        for e in await events_for(stack, "recording.upload_failed", bot_id)
        if isinstance(e.event, RecordingUploadFailed)
    ]
    assert [(f.attempt, f.final) for f in failures] == [(1, True)]
    assert SECRET not in failures[0].error

    lines = await eventually(
        lambda: asyncio.sleep(0, [x for x in log_lines(strict_uploader, bot_id)
                                  if x["event"] == "upload.failed"]),
        10,
        "the upload.failed log line",
    )  # fmt: skip
    assert lines[0]["reason"] == "source_forbidden"
    assert lines[0]["final"] is True
    assert all(SECRET not in json.dumps(line) for line in log_lines(strict_uploader, bot_id))
