"""Prometheus metrics every service shares, and the metrics endpoint as an ASGI app.

Labels stay bounded: service, consumer group, topic, outcome, reason — never a bot or org id
(the per-org cost gauges in the metrics service are capped by settings).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from prometheus_client import Counter, make_asgi_app
from prometheus_client.registry import REGISTRY

CONSUMER_HANDLED = Counter(
    "notetaker_consumer_events_handled_total",
    "Events a consumer group handled successfully.",
    ["group", "topic"],
)
CONSUMER_DLQ = Counter(
    "notetaker_consumer_events_dead_lettered_total",
    "Events sent to the dead-letter topic (unparseable or handler kept failing).",
    ["group", "topic"],
)


def metrics_asgi_app() -> Callable[..., Any]:
    """The `/metrics` endpoint for the default registry."""
    return make_asgi_app(registry=REGISTRY)
