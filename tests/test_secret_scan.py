"""The run's secret scan (tests/secret_scan.py) finds what it looks for: a secret planted in each
place it searches is reported, naming the place; what belongs where it is is not."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import asyncpg

from notetaker.common.events import DLQ_ERROR_HEADER, RecordingCompleted, dlq_topic
from notetaker.devstack.stack import Stack
from tests import secret_scan
from tests.conftest import KafkaRecord

SIGNED = b"https://bucket.example/v.mp4?X-Amz-Credential=AK&X-Amz-Signature=0f0f"
CONFIGURED = b"whsec_c2VjcmV0LXNlY3JldC1zZWNyZXQ="


def record(topic: str, value: bytes, headers: list[tuple[str, bytes]] | None = None) -> KafkaRecord:
    return KafkaRecord(topic, 0, 7, b"bot", headers or [], value)


async def test_each_place_the_scan_searches_reports_what_was_planted_there(
    stack: Stack, tmp_path: Path
) -> None:
    log = tmp_path / "uploader.log"
    log.write_bytes(b'{"event": "upload.failed", "url": "' + SIGNED + b'"}\n')
    secret_scan.metrics_path(log).write_bytes(b'notetaker_x{secret="' + CONFIGURED + b'"} 1\n')
    clean_log = tmp_path / "ingest.log"
    clean_log.write_bytes(b'{"event": "webhook.accepted", "host": "bucket.example"}\n')
    topics: dict[str, list[Any]] = {
        "recording.uploaded": [
            record("recording.uploaded", b'{"jwt": "eyJhbGciOiJI.eyJvcmdzIjpb.x"}')
        ],
        dlq_topic("bot.status"): [
            record(dlq_topic("bot.status"), b"{}", [(DLQ_ERROR_HEADER, b"SIG" + b"ab" * 12)])
        ],
        # the event that hands the URL over may carry it, not a configured secret
        RecordingCompleted.type: [
            record(RecordingCompleted.type, SIGNED),
            record(RecordingCompleted.type, CONFIGURED),
        ],
        dlq_topic(RecordingCompleted.type): [
            record(dlq_topic(RecordingCompleted.type), SIGNED, [(DLQ_ERROR_HEADER, SIGNED)])
        ],
    }
    bot_id = f"scan-{uuid.uuid4()}"
    connection = await asyncpg.connect(stack.database_url)
    try:
        async with connection.transaction():
            await connection.execute(
                "INSERT INTO recordings (org_id, user_id, bot_id, provider_video_url,"
                " s3_upload_error_message) VALUES ($1, $2, $3, $4, $5)",
                uuid.uuid4(),
                uuid.uuid4(),
                bot_id,
                "https://bucket.example/v.mp4",
                "source_http_403 from bucket.example: callback token=" + "a" * 64,
            )
            await connection.execute(
                "INSERT INTO webhook_deliveries (provider, delivery_id, event_type, bot_id)"
                " VALUES ('meetingbaas', $1, 'bot.completed', $1)",
                bot_id,
            )
            await connection.execute(  # a webhook body kept as it came, not sealed
                "INSERT INTO webhook_bodies (provider, delivery_id, bot_id, event_type, sealed,"
                " size_bytes, received_at) VALUES ('meetingbaas', $1, $1, 'bot.completed',"
                " $2, 2, now())",
                bot_id,
                b'{"event": "bot.completed"}',
            )
            found = await secret_scan.findings(
                logs=[log, clean_log],
                secrets={CONFIGURED},
                connection=connection,
                topics=list(topics),
                read_topic=lambda topic: topics[topic],
            )
            raise _RollBack
    except _RollBack:
        pass
    finally:
        await connection.close()

    assert f"{log}: /X-Amz-Signature/" in found
    assert f"{log}: /X-Amz-Credential/" in found
    assert any(f.startswith(f"{log}.metrics: a configured secret") for f in found)
    assert not any(f.startswith(str(clean_log)) for f in found)
    assert "recordings.provider_video_url: not sealed (https://buck...)" in found
    assert 'webhook_bodies.sealed: not sealed (b\'{"event": "b\'...)' in found
    assert "recordings.s3_upload_error_message: /token=[0-9a-f]{64}/" in found
    assert any(f.startswith("recording.uploaded 0:7 value: /eyJ") for f in found)
    assert f"{dlq_topic('bot.status')} 0:7 header {DLQ_ERROR_HEADER}: /SIG[0-9a-f]{{24}}/" in found
    handed_over = [f for f in found if f.startswith(f"{RecordingCompleted.type} ")]
    assert handed_over == [f"{RecordingCompleted.type} 0:7 value: a configured secret (whse...)"]
    in_its_dead_letters = [f for f in found if f.startswith(dlq_topic(RecordingCompleted.type))]
    assert in_its_dead_letters == [
        f"{dlq_topic(RecordingCompleted.type)} 0:7 header {DLQ_ERROR_HEADER}: /X-Amz-Signature/",
        f"{dlq_topic(RecordingCompleted.type)} 0:7 header {DLQ_ERROR_HEADER}: /X-Amz-Credential/",
    ]


class _RollBack(Exception):
    """Leaves the planted row out of the database the run's own scan looks through."""
