"""The failure policy: which errors dead-letter at once, which wait out an outage, which are
retried and then parked; and that the retries back off, with jitter, honouring Retry-After."""

from __future__ import annotations

import asyncio
import errno
import time
from collections.abc import Iterator
from email.utils import formatdate
from typing import Any

import aiohttp
import asyncpg
import botocore.exceptions
import httpx
import pydantic
import pytest
from aiokafka import errors as kafka_errors
from multidict import CIMultiDict, CIMultiDictProxy
from stamina.instrumentation import RetryDetails, get_on_retry_hooks, set_on_retry_hooks
from yarl import URL

from notetaker.common.db import PoolExhausted
from notetaker.common.envelope import EnvelopeError
from notetaker.common.failures import (
    Kind,
    OutagePolicy,
    Permanent,
    RetryPolicy,
    attempts,
    classify,
    retry_after,
)


def httpx_error(status: int, headers: dict[str, str] | None = None) -> httpx.HTTPStatusError:
    request = httpx.Request("POST", "https://api.gladia.io/v2/pre-recorded")
    response = httpx.Response(status, headers=headers, request=request)
    return httpx.HTTPStatusError(f"{status}", request=request, response=response)


def aiohttp_error(
    status: int, headers: dict[str, str] | None = None
) -> aiohttp.ClientResponseError:
    info = aiohttp.RequestInfo(
        URL("https://x.example/t.json"), "GET", CIMultiDictProxy(CIMultiDict())
    )
    return aiohttp.ClientResponseError(
        info, (), status=status, headers=CIMultiDictProxy(CIMultiDict(headers or {}))
    )


def s3_error(code: str, status: int | None) -> botocore.exceptions.ClientError:
    response: Any = {"Error": {"Code": code}}
    if status is not None:
        response["ResponseMetadata"] = {"HTTPStatusCode": status}
    return botocore.exceptions.ClientError(response, "PutObject")


NO_ERROR_BODY: Any = {"ResponseMetadata": {"HTTPStatusCode": 503}}


class Odd(Exception):
    """An error of no HTTP client that happens to carry a `status`."""

    status = 404


def validation_error() -> pydantic.ValidationError:
    class Model(pydantic.BaseModel):
        n: int

    try:
        Model.model_validate({"n": "x"})
    except pydantic.ValidationError as exc:
        return exc
    raise AssertionError("unreachable")


PERMANENT = {
    "a handler's refusal": Permanent("no such meeting"),
    "an unparseable event": EnvelopeError("no ce_type header"),
    "a payload out of schema": validation_error(),
    "a value PostgreSQL cannot store": asyncpg.exceptions.CharacterNotInRepertoireError("NUL"),
    "a provider's 400": httpx_error(400),
    "a provider's 404": aiohttp_error(404),
    "a provider's 403": httpx_error(403),
}
OUTAGE = {
    "PostgreSQL refusing connections": ConnectionRefusedError(errno.ECONNREFUSED, "refused"),
    "PostgreSQL dropping a connection": asyncpg.exceptions.ConnectionDoesNotExistError("gone"),
    "PostgreSQL closed under us": asyncpg.exceptions.InterfaceError("connection is closed"),
    "PostgreSQL shutting down": asyncpg.exceptions.AdminShutdownError("shutdown"),
    "PostgreSQL starting up": asyncpg.exceptions.CannotConnectNowError("starting"),
    "no pooled connection free": PoolExhausted("no database connection came free in 10s"),
    "a timeout of ours": TimeoutError(),
    "Kafka unreachable": kafka_errors.KafkaConnectionError("refused"),
    "Kafka not acknowledging": kafka_errors.KafkaTimeoutError(),
    "S3 unreachable": botocore.exceptions.EndpointConnectionError(endpoint_url="http://s3"),
    "S3 slowing us down": s3_error("SlowDown", 503),
    "S3 answering 500": s3_error("InternalError", 500),
    "S3 answering 500 with a code of its own": s3_error("SomethingNew", 500),
    "S3 answering 502 with a code of its own": s3_error("BadGateway", 502),
    "S3 slowing us down, no status known": s3_error("SlowDown", None),
    "S3 answering 503 without an error body": botocore.exceptions.ClientError(
        NO_ERROR_BODY, "PutObject"
    ),
}
TRANSIENT = {
    "a provider's 500": httpx_error(500),
    "a provider's 503": aiohttp_error(503),
    "a provider's 429": httpx_error(429),
    "a provider's 408": aiohttp_error(408),
    "a provider unreachable": aiohttp.ClientConnectorError(
        aiohttp.client_reqrep.ConnectionKey("x.example", 443, True, True, None, None, None),
        OSError(errno.ECONNREFUSED, "refused"),
    ),
    "a provider timing out": httpx.ReadTimeout("slow"),
    "S3 refusing access": s3_error("AccessDenied", 403),
    "S3 refusing, no status known": s3_error("AccessDenied", None),
    "S3 answering 499 with a code of its own": s3_error("SomethingNew", 499),
    "an error that merely carries a status": Odd(),
    "an error nobody foresaw": RuntimeError("surprise"),
}


@pytest.mark.parametrize(
    ("case", "kind"),
    [(c, Kind.PERMANENT) for c in PERMANENT]
    + [(c, Kind.OUTAGE) for c in OUTAGE]
    + [(c, Kind.TRANSIENT) for c in TRANSIENT],
)
def test_each_error_has_its_kind(case: str, kind: Kind) -> None:
    error = {**PERMANENT, **OUTAGE, **TRANSIENT}[case]
    assert classify(error) is kind


def test_retry_after_in_seconds_or_as_a_date() -> None:
    assert retry_after(httpx_error(429, {"Retry-After": "7"})) == 7.0
    now = time.time() + 100_000  # a clock of the caller's, far from this machine's
    dated = aiohttp_error(503, {"Retry-After": formatdate(now + 30, usegmt=True)})
    assert retry_after(dated, now=now) == pytest.approx(30, abs=1)
    past = httpx_error(503, {"Retry-After": formatdate(now - 30, usegmt=True)})
    assert retry_after(past, now=now) == 0.0
    assert retry_after(httpx_error(429, {"Retry-After": "soon"})) is None
    assert retry_after(httpx_error(500)) is None
    assert retry_after(RuntimeError()) is None


def test_the_policy_retries_transient_errors_only_and_honours_retry_after() -> None:
    policy = RetryPolicy(retry_after_max=60)
    assert policy.should_retry(Permanent("no")) is False
    assert policy.should_retry(httpx_error(404)) is False
    assert policy.should_retry(RuntimeError()) is True
    assert policy.should_retry(TimeoutError()) is False  # an outage: waited out, not retried
    assert policy.should_retry(httpx_error(429, {"Retry-After": "12"})) == 12.0
    assert policy.should_retry(httpx_error(429, {"Retry-After": "3600"})) == 60.0


@pytest.fixture
def scheduled() -> Iterator[list[RetryDetails]]:
    """Every retry stamina schedules (with the wait it chose), in order."""
    seen: list[RetryDetails] = []
    before = get_on_retry_hooks()

    def hook(details: RetryDetails) -> None:
        seen.append(details)

    set_on_retry_hooks([*before, hook])
    yield seen
    set_on_retry_hooks(before)


async def run(policy: RetryPolicy | OutagePolicy, failures: list[BaseException]) -> int:
    """Run an operation that raises `failures` in turn, then succeeds; how many tries it took."""
    tries = 0
    async for attempt in attempts(policy):
        with attempt:
            tries += 1
            if tries <= len(failures):
                raise failures[tries - 1]
    return tries


async def test_transient_errors_are_retried_with_doubling_jittered_waits_then_given_up(
    scheduled: list[RetryDetails],
) -> None:
    policy = RetryPolicy(attempts=4, timeout=10, wait_initial=0.01, wait_max=1, wait_jitter=0.01)
    assert await run(policy, [RuntimeError()] * 3) == 4
    waits = [d.wait_for for d in scheduled]
    assert [d.retry_num for d in scheduled] == [1, 2, 3]
    for n, wait in enumerate(waits):
        assert 0.01 * 2**n <= wait <= 0.01 * 2**n + 0.01
    scheduled.clear()
    with pytest.raises(RuntimeError):
        await run(policy, [RuntimeError()] * 4)  # the bound: 4 tries, 3 waits
    assert len(scheduled) == 3


async def test_jitter_spreads_the_waits_of_many_consumers(scheduled: list[RetryDetails]) -> None:
    policy = RetryPolicy(attempts=2, timeout=10, wait_initial=0.001, wait_max=1, wait_jitter=0.05)
    await asyncio.gather(*(run(policy, [RuntimeError()]) for _ in range(8)))
    assert len({d.wait_for for d in scheduled}) == 8


async def test_a_retry_after_is_the_wait(scheduled: list[RetryDetails]) -> None:
    policy = RetryPolicy(attempts=2, timeout=10, wait_initial=5, wait_max=5, wait_jitter=0)
    assert await run(policy, [httpx_error(429, {"Retry-After": "0"})]) == 2
    assert [d.wait_for for d in scheduled] == [0.0]


async def test_a_permanent_error_is_not_retried() -> None:
    policy = RetryPolicy(attempts=5, wait_initial=0.01, wait_max=0.01, wait_jitter=0)
    tries: list[int] = []

    async def refused() -> None:
        async for attempt in attempts(policy):
            with attempt:
                tries.append(attempt.num)
                raise Permanent("refused")

    with pytest.raises(Permanent):
        await refused()
    assert tries == [1]


async def test_an_outage_is_waited_out_for_as_long_as_it_lasts_and_nothing_else_is() -> None:
    policy = OutagePolicy(wait_initial=0.001, wait_max=0.002, wait_jitter=0)
    assert await run(policy, [ConnectionRefusedError()] * 30) == 31  # past any attempt bound
    with pytest.raises(RuntimeError):
        await run(policy, [ConnectionRefusedError(), RuntimeError("not an outage")])
