"""The provider simulator's recording URLs expire as MeetingBaaS's do, and both APIs sign them
anew (v2 `GET /v2/bots/{id}`, v1 `GET /bots/meeting_data?bot_id=id`), answering in the shapes of
the samples; the uploader's client (`notetaker.common.meetingbaas`) reads both answers, and tells
a recording MeetingBaaS no longer has from one it does."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from notetaker.common.meetingbaas import (
    Api,
    ProviderError,
    RecordingGone,
    RecordingUrls,
    fresh_recording_urls,
)
from notetaker.devstack.media import Recording
from notetaker.devstack.simulator import ProviderSimulator, SimulatorConfig
from notetaker.devstack.stack import free_port
from tests.fixtures import PROVIDER_SAMPLES

KEY = "simulator-api-key-of-this-test"
VIDEO, AUDIO = b"video bytes " * 1000, b"audio bytes " * 500


@pytest.fixture
async def simulator() -> AsyncIterator[ProviderSimulator]:
    config = SimulatorConfig(
        ingest_url=f"http://127.0.0.1:{free_port()}",  # nobody listens: webhooks go nowhere
        svix_secret="whsec_" + "c2ltdWxhdG9yLXNlY3JldC1vZi10aGlzLXRlc3Q=",
        api_key=KEY,
        gladia_api_key="gladia-key-of-this-test",
        url_validity_seconds=60,
        status_delay_seconds=0.01,
        completed_delay_seconds=0.01,
        delivery_attempts=1,
    )
    sim = ProviderSimulator(config, Recording(video=VIDEO, audio=AUDIO))
    await sim.start()
    yield sim
    await sim.stop()


async def completed_bot(sim: ProviderSimulator) -> str:
    bot_id = sim.create_bot(transcription=False)
    for _ in range(500):
        if sim.bots[bot_id].status == "completed":
            return bot_id
        await asyncio.sleep(0.01)
    raise AssertionError(f"bot {bot_id} never completed")


async def test_an_expired_url_is_refused_and_the_bot_hands_out_one_that_works(
    simulator: ProviderSimulator,
) -> None:
    bot_id = await completed_bot(simulator)
    issued = datetime.now(UTC) - timedelta(seconds=61)  # the test's clock: past its validity
    expired = simulator.signed_url(bot_id, "video.mp4", issued=issued)
    async with httpx.AsyncClient() as http:
        refused = await http.get(expired)
    assert refused.status_code == 403
    assert b"Request has expired" in refused.content

    urls = await fresh_recording_urls(simulator.base_url, KEY, bot_id, 5, api="v2")
    assert isinstance(urls, RecordingUrls)
    assert urls.video is not None
    async with httpx.AsyncClient() as http:
        video = await http.get(urls.video, headers={"range": "bytes=12-"})
        assert urls.audio is not None
        audio = await http.get(urls.audio)
    assert (video.status_code, video.content) == (206, VIDEO[12:])
    assert audio.content == AUDIO
    assert simulator.refreshes == [("v2", bot_id)]


async def test_the_v1_api_signs_the_mp4_anew(simulator: ProviderSimulator) -> None:
    bot_id = await completed_bot(simulator)
    urls = await fresh_recording_urls(simulator.base_url, KEY, bot_id, 5, api="v1")
    assert urls.audio is None  # the simulator's v1 bots record no WAV (`audio` is "")
    assert urls.video is not None
    async with httpx.AsyncClient() as http:
        video = await http.get(urls.video, headers={"range": "bytes=7-"})
    assert (video.status_code, video.content) == (206, VIDEO[7:])
    assert simulator.refreshes == [("v1", bot_id)]


@pytest.mark.parametrize("api", ["v1", "v2"])
async def test_a_recording_the_provider_deleted_or_a_bot_it_does_not_know_is_gone(
    simulator: ProviderSimulator, api: Api
) -> None:
    bot_id = await completed_bot(simulator)
    simulator.deleted_recordings.add(bot_id)
    deleted = "has deleted the recording" if api == "v2" else "has no mp4"
    with pytest.raises(RecordingGone, match=f"MeetingBaaS {deleted} .*bot {bot_id}"):
        await fresh_recording_urls(simulator.base_url, KEY, bot_id, 5, api=api)
    unknown = str(uuid.uuid4())
    with pytest.raises(
        RecordingGone, match=rf"no longer has bot {unknown} \(API {api}: HTTP 404\)"
    ):
        await fresh_recording_urls(simulator.base_url, KEY, unknown, 5, api=api)


@pytest.mark.parametrize("api", ["v1", "v2"])
async def test_a_refresh_with_a_wrong_key_is_a_provider_error(
    simulator: ProviderSimulator, api: Api
) -> None:
    bot_id = await completed_bot(simulator)
    with pytest.raises(ProviderError, match=rf"\(API {api}: HTTP 401\)"):
        await fresh_recording_urls(simulator.base_url, "another-key-entirely", bot_id, 5, api=api)


def keys(value: Any) -> Any:
    """The shape of a JSON value: its objects' keys, nested, without the values."""
    if isinstance(value, dict):
        return {k: keys(v) for k, v in value.items()}
    return type(value).__name__ if not isinstance(value, list) else [keys(v) for v in value[:1]]


@pytest.mark.parametrize(
    ("sample", "path"),
    [
        ("v2-get-bot.response.json", "/v2/bots/{bot_id}"),
        ("v1-meeting-data.response.json", "/bots/meeting_data?bot_id={bot_id}"),
    ],
)
async def test_the_simulator_answers_in_the_samples_shape(
    simulator: ProviderSimulator, sample: str, path: str
) -> None:
    """Each API's answer has the fields, nesting and envelope of its MeetingBaaS sample (which
    has every field the API's OpenAPI description requires)."""
    expected = json.loads((PROVIDER_SAMPLES / "meetingbaas" / sample).read_text())
    bot_id = simulator.create_bot(transcription=True, extra={"meeting_id": str(uuid.uuid4())})
    for _ in range(500):
        if simulator.bots[bot_id].status == "completed":
            break
        await asyncio.sleep(0.01)
    async with httpx.AsyncClient() as http:
        answer = await http.get(
            simulator.base_url + path.format(bot_id=bot_id),
            headers={"x-meeting-baas-api-key": KEY},
        )
    assert answer.status_code == 200
    body = answer.json()
    if "data" in body:
        body["data"]["tokens"] = expected["data"]["tokens"]  # null until consumed, as allowed
        assert body["data"]["chat_messages"].endswith("/chat_messages.json")  # the sample's is
        body["data"]["chat_messages"] = None  # null: a meeting without a chat
    assert keys(body) == keys(expected)
