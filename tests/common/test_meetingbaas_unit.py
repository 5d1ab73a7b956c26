"""Reading MeetingBaaS's answers for fresh recording URLs (`notetaker.common.meetingbaas`), v2's
bot details and v1's meeting data, from the samples in the providers' documented shapes: which
answer is a recording, which one is gone for good, and which one we cannot read."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from notetaker.common.events import ArtifactKind
from notetaker.common.meetingbaas import (
    ProviderError,
    RecordingGone,
    RecordingUrls,
    bot_details_urls,
    meeting_data_urls,
)
from tests.fixtures import PROVIDER_SAMPLES

BOT = "7f3c2a4e-1b6d-4c8e-9a0f-2d5e8b1c3a77"


def sample(name: str) -> Any:
    return json.loads((PROVIDER_SAMPLES / "meetingbaas" / name).read_text())


V2 = sample("v2-get-bot.response.json")
V1 = sample("v1-meeting-data.response.json")


def v2_with(**data: Any) -> Any:
    body = copy.deepcopy(V2)
    body["data"].update(data)
    return body


def v1_with(**fields: Any) -> Any:
    return copy.deepcopy(V1) | fields


def test_v2_bot_details_give_the_video_audio_and_artifacts_signed_again() -> None:
    data = V2["data"]
    kinds: tuple[ArtifactKind, ...] = ("transcription", "raw_transcription", "diarization")
    artifacts = {k: data[k] for k in kinds}
    assert bot_details_urls(BOT, V2) == RecordingUrls(data["video"], data["audio"], artifacts)
    assert bot_details_urls(BOT, v2_with(audio=None)).audio is None
    # An audio-only recording: the audio alone, and its artifacts.
    assert bot_details_urls(BOT, v2_with(video=None)) == RecordingUrls(
        None, data["audio"], artifacts
    )
    # A chat comes signed again too; an artifact the answer leaves out is not named.
    chat = "https://example.com/chat_messages.json?X-Amz-Signature=s"
    again = bot_details_urls(BOT, v2_with(chat_messages=chat, diarization=None))
    assert again.artifacts == {
        "transcription": data["transcription"],
        "raw_transcription": data["raw_transcription"],
        "chat_messages": chat,
    }


def test_v1_meeting_data_gives_the_mp4_and_the_wav_when_there_is_one() -> None:
    assert meeting_data_urls(BOT, V1) == RecordingUrls(V1["mp4"], None)  # `audio` is ""
    wav = "https://example.com/a.wav"
    assert meeting_data_urls(BOT, v1_with(audio=wav)) == RecordingUrls(V1["mp4"], wav)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (
            v2_with(artifacts_deleted=True, video=None, audio=None),
            f"MeetingBaaS has deleted the recording of bot {BOT}",
        ),
        # Deleted, even if a URL were still there: it would lead to nothing.
        (v2_with(artifacts_deleted=True), f"MeetingBaaS has deleted the recording of bot {BOT}"),
        (
            v2_with(video=None, audio=None),
            f"MeetingBaaS has no video or audio for bot {BOT} (status completed)",
        ),
        (
            v2_with(video="", audio="", status="<b>"),
            f"MeetingBaaS has no video or audio for bot {BOT} (status ?)",
        ),
    ],
)
def test_a_v2_bot_without_video_or_audio_is_gone(body: Any, message: str) -> None:
    with pytest.raises(RecordingGone) as raised:
        bot_details_urls(BOT, body)
    assert str(raised.value) == message


def test_a_v1_mp4_that_is_an_empty_string_is_gone() -> None:
    with pytest.raises(RecordingGone) as raised:
        meeting_data_urls(BOT, v1_with(mp4=""))
    assert str(raised.value) == f"MeetingBaaS has no mp4 for bot {BOT} any more"


@pytest.mark.parametrize(
    "body",
    [
        None,
        [],
        {"success": False, "error": "Not Found", "code": "FST_ERR_BOT_NOT_FOUND_BY_ID"},
        {"success": True},
        {"success": True, "data": []},
        {"data": V2["data"]},  # no `success: true`
        V1,  # v1's answer asked of v2
    ],
)
def test_a_v2_answer_in_another_shape_is_a_provider_error(body: Any) -> None:
    with pytest.raises(ProviderError, match=f"bot {BOT}'s details in an unknown shape"):
        bot_details_urls(BOT, body)


@pytest.mark.parametrize(
    "body",
    [None, [], {"error": "Bot not found"}, {"mp4": None}, {"mp4": 7}, V2],
)
def test_a_v1_answer_in_another_shape_is_a_provider_error(body: Any) -> None:
    with pytest.raises(ProviderError, match=f"bot {BOT}'s meeting data in an unknown shape"):
        meeting_data_urls(BOT, body)
