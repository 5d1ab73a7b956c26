"""One failure policy for every consumer: what an error means, and how long to retry it.

Every error a handler raises is one of three kinds:
- **permanent**: the event can never succeed (it does not parse, its schema version is unknown,
  a business rule refuses it, a provider answers 4xx): dead-lettered at once, never retried.
- **outage**: a dependency of ours is unreachable (PostgreSQL, Kafka, S3: refused or dropped
  connections, timeouts, a pool with no free connection, S3's 5xx and SlowDown). Nothing is wrong
  with the event: the consumer pauses, reports not-ready and retries until the dependency is back,
  never dead-lettering or parking it (parking needs the database, which may be what is down).
- **transient**: anything else (a provider's 5xx or 429, an error nobody foresaw): retried with
  jittered exponential backoff up to a bound, then parked in the database to be retried from there,
  so one bot never holds up a partition.

Retries use stamina (jittered exponential backoff over tenacity; it counts them in
`stamina_retries_total` and logs `stamina.retry_scheduled`). A provider's 429 or 503 with a
`Retry-After` is honoured as the wait before the next try.
"""

from __future__ import annotations

import asyncio
import email.utils
import enum
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp
import asyncpg
import botocore.exceptions
import pydantic
import stamina
from aiokafka import errors as kafka_errors

from notetaker.common.envelope import EnvelopeError


class Permanent(Exception):
    """Raised by a handler when the event can never succeed: it is dead-lettered at once."""


class Kind(enum.Enum):
    PERMANENT = "permanent"
    OUTAGE = "outage"
    TRANSIENT = "transient"


# A provider's answer that retrying cannot change; 408, 409, 425 and 429 can change with time.
_RETRYABLE_4XX = frozenset({408, 409, 425, 429})
_S3_OUTAGE_CODES = frozenset(
    {"SlowDown", "ServiceUnavailable", "InternalError", "RequestTimeout", "Throttling"}
)
_POSTGRES_OUTAGE = (
    asyncpg.PostgresConnectionError,  # connection refused, dropped, protocol broken
    asyncpg.InterfaceError,  # the connection was closed under us
    asyncpg.CannotConnectNowError,  # starting up or shutting down
    asyncpg.TooManyConnectionsError,
    asyncpg.OperatorInterventionError,  # admin shutdown, crash shutdown
    asyncpg.InsufficientResourcesError,  # disk full, out of memory
)
_KAFKA_OUTAGE = (
    kafka_errors.KafkaConnectionError,
    kafka_errors.KafkaTimeoutError,
    kafka_errors.NodeNotReadyError,
    kafka_errors.RequestTimedOutError,
    kafka_errors.NotLeaderForPartitionError,
    kafka_errors.LeaderNotAvailableError,
    kafka_errors.NotEnoughReplicasError,
)
_S3_OUTAGE = (
    botocore.exceptions.EndpointConnectionError,
    botocore.exceptions.ConnectionClosedError,
    botocore.exceptions.ConnectTimeoutError,
    botocore.exceptions.ReadTimeoutError,
)


def http_status(exc: BaseException) -> int | None:
    """The HTTP status a provider answered with, for the HTTP clients the services use."""
    status = getattr(exc, "status", None)  # aiohttp.ClientResponseError
    if isinstance(exc, aiohttp.ClientResponseError) and isinstance(status, int):
        return status
    response = getattr(exc, "response", None)  # httpx.HTTPStatusError
    code = getattr(response, "status_code", None)
    return code if isinstance(code, int) else None


def classify(exc: BaseException) -> Kind:
    if isinstance(exc, Permanent | EnvelopeError | pydantic.ValidationError):
        return Kind.PERMANENT
    if isinstance(exc, asyncpg.DataError):  # a value PostgreSQL can never store (NUL, range)
        return Kind.PERMANENT
    if isinstance(exc, (*_POSTGRES_OUTAGE, *_KAFKA_OUTAGE, *_S3_OUTAGE)):
        return Kind.OUTAGE
    if isinstance(exc, botocore.exceptions.ClientError):
        error = exc.response.get("Error", {})
        s3_status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        if error.get("Code") in _S3_OUTAGE_CODES or s3_status >= 500:
            return Kind.OUTAGE
        return Kind.TRANSIENT  # AccessDenied, NoSuchBucket: a configuration an operator fixes
    status = http_status(exc)
    if status is None and isinstance(exc, aiohttp.ClientError):
        return Kind.TRANSIENT  # a provider or source host unreachable: not our dependency
    if status is not None and 400 <= status < 500 and status not in _RETRYABLE_4XX:
        return Kind.PERMANENT  # a provider refusing the request will refuse it again
    if status is not None:
        return Kind.TRANSIENT
    # Timeouts and refused connections of our own dependencies (asyncpg raises OSError and
    # TimeoutError for these; a pool with no free connection is an OSError too).
    if isinstance(exc, OSError | TimeoutError | asyncio.TimeoutError):
        return Kind.OUTAGE
    return Kind.TRANSIENT


def retry_after(exc: BaseException, now: float | None = None) -> float | None:
    """Seconds a provider's `Retry-After` asks us to wait (delta-seconds or an HTTP date)."""
    headers: Mapping[str, str] | None = getattr(exc, "headers", None)  # aiohttp
    if headers is None:
        headers = getattr(getattr(exc, "response", None), "headers", None)  # httpx
    value = headers.get("Retry-After") if headers is not None else None
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


@dataclass(frozen=True)
class RetryPolicy:
    """How long a transient error is retried in place before the event is parked."""

    attempts: int = 6
    timeout: float = 60.0
    wait_initial: float = 0.5
    wait_max: float = 15.0
    wait_jitter: float = 1.0
    retry_after_max: float = 300.0  # a provider asking for longer waits in the parked table

    def should_retry(self, exc: Exception) -> bool | float:
        """stamina's backoff hook: transient errors only (a permanent error is not retried, an
        outage is the caller's to wait out with `OutagePolicy`); a provider's Retry-After as
        the wait when it gave one."""
        if classify(exc) is not Kind.TRANSIENT:
            return False
        asked = retry_after(exc)
        if asked is not None:
            return min(asked, self.retry_after_max)
        return True

    def attempts_of(self) -> Any:
        """`async for attempt in policy.attempts_of(): with attempt: ...`"""
        return stamina.retry_context(
            on=self.should_retry,
            attempts=self.attempts,
            timeout=self.timeout,
            wait_initial=self.wait_initial,
            wait_max=self.wait_max,
            wait_jitter=self.wait_jitter,
        )


@dataclass(frozen=True)
class OutagePolicy:
    """How an outage is waited out: retried without end (stamina's attempts and timeout off),
    backing off to `wait_max` between probes."""

    wait_initial: float = 0.5
    wait_max: float = 10.0
    wait_jitter: float = 1.0

    def attempts_of(self) -> Any:
        return stamina.retry_context(
            on=lambda exc: classify(exc) is Kind.OUTAGE,
            attempts=None,
            timeout=None,
            wait_initial=self.wait_initial,
            wait_max=self.wait_max,
            wait_jitter=self.wait_jitter,
        )


async def attempts(policy: RetryPolicy | OutagePolicy) -> AsyncIterator[Any]:
    """The policy's attempts as an async iterator (typed for callers)."""
    async for attempt in policy.attempts_of():
        yield attempt
