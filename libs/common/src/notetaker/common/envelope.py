"""CloudEvents 1.0 envelope, Kafka binary binding: attributes in `ce_*` headers, JSON payload.

The event id is derived from the fact itself (type + the event's fact key), so a redelivered
webhook or a replayed step produces the same id and consumers can recognise it.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

from cloudevents.core.bindings import kafka as ce_kafka
from cloudevents.core.formats.json import JSONFormat
from cloudevents.core.v1.event import CloudEvent

from notetaker.common.events import Event, parse

_NAMESPACE = uuid.UUID("6f0e2b1c-60a0-4e1b-9a4f-6e6f7465746b")
_FORMAT = JSONFormat()


class EnvelopeError(ValueError):
    """A Kafka message that is not a CloudEvent of our catalog."""


@dataclass(frozen=True)
class Envelope:
    id: str
    source: str
    type: str
    time: datetime
    event: Event


def event_id(event: Event) -> str:
    return str(uuid.uuid5(_NAMESPACE, f"{event.type}:{event.fact_key()}"))


def to_message(event: Event, source: str) -> ce_kafka.KafkaMessage:
    """Encode `event` for Kafka, keyed by its bot id."""
    cloud_event = CloudEvent(
        attributes={
            "id": event_id(event),
            "source": source,
            "type": event.type,
            "specversion": "1.0",
            "time": datetime.now(UTC),
            "datacontenttype": "application/json",
            "dataschema": event.dataschema(),
            "subject": event.bot_id,
        },
        data=event.model_dump(mode="json"),
    )
    return ce_kafka.to_binary(cloud_event, _FORMAT, key_mapper=lambda _: event.bot_id.encode())


def from_message(
    headers: list[tuple[str, bytes]] | tuple[tuple[str, bytes], ...],
    key: bytes | None,
    value: bytes,
) -> Envelope:
    """Decode a Kafka record into its envelope and validated payload, or raise EnvelopeError."""
    try:
        cloud_event = ce_kafka.from_binary(
            ce_kafka.KafkaMessage(headers=dict(headers), key=key, value=value), _FORMAT
        )
        event = parse(cloud_event.get_type(), cloud_event.get_data())
    except Exception as exc:  # any decoding or validation failure means: dead-letter it
        raise EnvelopeError(f"{type(exc).__name__}: {exc}") from exc
    return Envelope(
        id=cloud_event.get_id(),
        source=cloud_event.get_source(),
        type=cloud_event.get_type(),
        time=cloud_event.get_time() or datetime.now(UTC),
        event=event,
    )
