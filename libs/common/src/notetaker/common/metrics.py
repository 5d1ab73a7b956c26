"""Prometheus metrics every service shares, and the `/metrics` endpoint.

Labels stay bounded: service, consumer group, topic, outcome, reason — never a bot or org id
(the per-org cost gauges in the metrics service are capped by settings).
"""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST, Counter, generate_latest
from prometheus_client.registry import REGISTRY
from starlette.requests import Request
from starlette.responses import Response

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


async def metrics_endpoint(_: Request) -> Response:
    """`GET /metrics` in the Prometheus text format (a route, so no redirect to `/metrics/`)."""
    return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)
