"""Topics are created with an explicit retention: event topics keep
NOTETAKER_KAFKA_EVENT_RETENTION_MS, dead-letter topics NOTETAKER_KAFKA_DEAD_LETTER_RETENTION_MS
(long enough to replay them).

The configs are read back with librdkafka's admin client (not the code under test), from the
stack's broker: the embedded Tansu broker or, with Docker, Apache Kafka.
"""

from __future__ import annotations

import logging
import uuid
from typing import Any

import pytest
from confluent_kafka.admin import AdminClient
from confluent_kafka.admin._config import ConfigResource
from pydantic import ValidationError

from notetaker.common.events import TOPICS, dlq_topic
from notetaker.common.kafka import ensure_topics
from notetaker.common.settings import DAY_MS, NotetakerSettings
from notetaker.devstack.stack import Stack


def retention_of(bootstrap: str, topics: list[str]) -> dict[str, str | None]:
    """Each topic's retention.ms as the broker describes it (None: not reported)."""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    futures = admin.describe_configs(
        [ConfigResource(ConfigResource.Type.TOPIC, topic) for topic in topics]
    )
    found: dict[str, str | None] = {}
    for resource, future in futures.items():
        configs: dict[str, Any] = future.result(timeout=20)
        entry = configs.get("retention.ms")
        found[resource.name] = None if entry is None else entry.value
    return found


def partitions_of(bootstrap: str, topics: list[str]) -> dict[str, int]:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    metadata = admin.list_topics(timeout=20)
    return {t: len(metadata.topics[t].partitions) for t in topics if t in metadata.topics}


def test_defaults_keep_events_a_week_and_dead_letters_two_weeks() -> None:
    settings = NotetakerSettings(_env_file=None)
    assert settings.kafka_event_retention_ms == 7 * DAY_MS == 604_800_000
    assert settings.kafka_dead_letter_retention_ms == 14 * DAY_MS == 1_209_600_000


@pytest.mark.parametrize("value", [0, 1000, -2])
def test_a_retention_in_seconds_or_zero_is_refused(value: int) -> None:
    with pytest.raises(ValidationError, match="at least 3600000 ms"):
        NotetakerSettings(kafka_dead_letter_retention_ms=value)
    with pytest.raises(ValidationError, match="at least 3600000 ms"):
        NotetakerSettings(kafka_event_retention_ms=value)


def test_minus_one_keeps_for_ever() -> None:
    settings = NotetakerSettings(kafka_event_retention_ms=-1, kafka_dead_letter_retention_ms=-1)
    assert settings.kafka_dead_letter_retention_ms == -1


async def test_the_stacks_topics_carry_the_default_retention(stack: Stack) -> None:
    topics = [t for topic in TOPICS for t in (topic, dlq_topic(topic))]
    found = retention_of(stack.kafka_bootstrap_servers, topics)
    assert {t: found[t] for t in TOPICS} == {t: "604800000" for t in TOPICS}
    dead = [dlq_topic(t) for t in TOPICS]
    assert {t: found[t] for t in dead} == {t: "1209600000" for t in dead}


async def test_ensure_topics_passes_the_retention_from_the_settings(stack: Stack) -> None:
    name = f"retention-test-{uuid.uuid4().hex[:8]}"
    settings = stack.settings(
        kafka_event_retention_ms=2 * DAY_MS,
        kafka_dead_letter_retention_ms=30 * DAY_MS,
        kafka_topic_partitions=2,
    )
    await ensure_topics(settings, [name])
    bootstrap = stack.kafka_bootstrap_servers
    assert retention_of(bootstrap, [name, f"{name}.dlq"]) == {
        name: str(2 * DAY_MS),
        f"{name}.dlq": str(30 * DAY_MS),
    }
    assert partitions_of(bootstrap, [name, f"{name}.dlq"]) == {name: 2, f"{name}.dlq": 2}


async def test_an_existing_topic_is_left_alone_and_a_differing_retention_logged(
    stack: Stack, caplog: pytest.LogCaptureFixture
) -> None:
    name = f"retention-test-{uuid.uuid4().hex[:8]}"
    await ensure_topics(stack.settings(), [name])
    longer = stack.settings(kafka_event_retention_ms=3 * DAY_MS)
    with caplog.at_level(logging.WARNING, logger="notetaker.common.kafka"):
        await ensure_topics(longer, [name])
    # Not altered: lowering or raising a retention is an operator's decision.
    assert retention_of(stack.kafka_bootstrap_servers, [name]) == {name: str(7 * DAY_MS)}
    warnings = [
        r.msg
        for r in caplog.records
        if isinstance(r.msg, dict) and r.msg.get("event") == "kafka.topic_retention_differs"
    ]
    assert [(w["topic"], w["retention_ms"], w["expected_retention_ms"]) for w in warnings] == [
        (name, str(7 * DAY_MS), str(3 * DAY_MS))
    ]
    assert f"--entity-name {name} --add-config retention.ms={3 * DAY_MS}" in warnings[0]["fix"]
