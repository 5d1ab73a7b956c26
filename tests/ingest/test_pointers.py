"""Which `transcript.ready` events ingest sends as a pointer to the kept body (`pointed`)."""

from __future__ import annotations

from notetaker.common.events import KeptBodyRef, RecordingFailed, TranscriptReady
from notetaker.ingest.deliveries import pointed
from notetaker.ingest.handlers import gladia_mapped, parse_gladia
from tests.fixtures import PROVIDER_SAMPLES


def gladia_success() -> TranscriptReady:
    body = (PROVIDER_SAMPLES / "gladia" / "v2-callback.transcription.success.json").read_bytes()
    (event,), _ = gladia_mapped(parse_gladia(body), "bot-1")
    assert isinstance(event, TranscriptReady)
    return event


def test_a_transcript_past_the_threshold_points_at_its_body_and_keeps_the_rest() -> None:
    event = gladia_success()
    size = len(event.model_dump_json())
    failed = RecordingFailed(bot_id="bot-1", error_code="X")
    out = pointed([failed, event], "gladia", "req:job:transcription.success", size - 1)
    assert out[0] == failed
    small = out[1]
    assert isinstance(small, TranscriptReady)
    assert small.utterances is None
    assert small.body_ref == KeptBodyRef(
        provider="gladia", delivery_id="req:job:transcription.success"
    )
    # What the event said beside the utterances stays: the job, the language, the same fact.
    assert (small.job_id, small.language) == (event.job_id, event.language)
    assert small.fact_key() == event.fact_key()
    assert len(small.model_dump_json()) < size


def test_a_transcript_within_the_threshold_stays_inline() -> None:
    event = gladia_success()
    assert pointed([event], "gladia", "d", len(event.model_dump_json())) == [event]


def test_a_transcript_that_is_already_a_pointer_is_left_as_it_is() -> None:
    by_url = TranscriptReady(bot_id="b", provider="meetingbaas", transcript_url="https://x/t.json")
    by_job = TranscriptReady(bot_id="b", provider="gladia", job_id="j")
    assert pointed([by_url, by_job], "meetingbaas", "d", 1) == [by_url, by_job]
