"""The provider simulator's recording URLs expire as MeetingBaaS's do, and `GET /v2/bots/{id}`
signs them anew; the uploader's client (`notetaker.common.meetingbaas`) reads that answer, and
tells a recording MeetingBaaS no longer has from one it does."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import aiohttp
import httpx
import pytest

from notetaker.common.meetingbaas import RecordingGone, RecordingUrls, fresh_recording_urls
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

    urls = await fresh_recording_urls(simulator.base_url, KEY, bot_id, 5)
    assert isinstance(urls, RecordingUrls)
    async with httpx.AsyncClient() as http:
        video = await http.get(urls.video, headers={"range": "bytes=12-"})
        assert urls.audio is not None
        audio = await http.get(urls.audio)
    assert (video.status_code, video.content) == (206, VIDEO[12:])
    assert audio.content == AUDIO
    assert simulator.refreshes == [bot_id]


async def test_a_bot_the_provider_no_longer_keeps_is_gone(simulator: ProviderSimulator) -> None:
    bot_id = await completed_bot(simulator)
    simulator.deleted_recordings.add(bot_id)
    with pytest.raises(RecordingGone, match=f"MeetingBaaS no longer has bot {bot_id}"):
        await fresh_recording_urls(simulator.base_url, KEY, bot_id, 5)
    with pytest.raises(RecordingGone):
        await fresh_recording_urls(simulator.base_url, KEY, "no-such-bot", 5)


async def test_a_refresh_with_a_wrong_key_is_a_provider_error(simulator: ProviderSimulator) -> None:
    bot_id = await completed_bot(simulator)
    with pytest.raises(aiohttp.ClientResponseError) as raised:
        await fresh_recording_urls(simulator.base_url, "another-key-entirely", bot_id, 5)
    assert raised.value.status == 401


async def test_the_simulator_answers_in_the_samples_shape(simulator: ProviderSimulator) -> None:
    """The bot's details have the fields, and the envelope, of the MeetingBaaS sample."""
    sample = json.loads((PROVIDER_SAMPLES / "meetingbaas" / "v2-get-bot.response.json").read_text())
    bot_id = await completed_bot(simulator)
    async with httpx.AsyncClient() as http:
        answer = await http.get(
            f"{simulator.base_url}/v2/bots/{bot_id}", headers={"x-meeting-baas-api-key": KEY}
        )
    assert answer.status_code == 200
    body = answer.json()
    assert set(body) == set(sample)
    assert set(body["data"]) == set(sample["data"])
    assert body["data"]["bot_id"] == bot_id
