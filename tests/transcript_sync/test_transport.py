"""The Faust pieces transcript-sync fixes (`transport.py`), in process, on the app `create_app`
builds (nothing is started, no broker is asked): what the join did not settle is never committed
and holds back the commits of its partition; the flow resumes without emptying the agent's queue;
every event goes through `Consumer.ack` (Faust's Python stream iterator)."""

from __future__ import annotations

import uuid
from typing import Any

import faust.streams
import pytest
from faust.types import TP
from faust.types.tuples import ConsumerMessage

from notetaker.transcript_sync.app import create_app
from notetaker.transcript_sync.settings import TranscriptSyncSettings
from notetaker.transcript_sync.transport import Consumer

TOPIC = "transcript.ready"
PARTITION = TP(TOPIC, 1)


@pytest.fixture
def app() -> faust.App:
    built = create_app(TranscriptSyncSettings(faust_app_id=f"test-transport-{uuid.uuid4()}"))
    built.topics.acking_topics.add(TOPIC)  # what subscribing to the join's topics does
    return built


def consumer_of(app: faust.App) -> Consumer:
    consumer = app.consumer
    assert isinstance(consumer, Consumer)
    return consumer


def message(offset: int) -> ConsumerMessage:
    read = ConsumerMessage(
        TOPIC, PARTITION.partition, offset, 0.0, 0, [], b"bot", b"{}", None, tp=PARTITION
    )
    read.incref()  # one stream holds it, as the conductor counts
    return read


def done(consumer: Consumer, offset: int, settled: bool) -> None:
    """The agent finished the event at `offset` (settled, or not) and the stream acks it."""
    read = message(offset)
    if settled:
        consumer.settle(read)
    read.ack(consumer)


def test_an_event_that_was_not_settled_is_never_committed_nor_passed(app: faust.App) -> None:
    consumer = consumer_of(app)
    consumer._committed_offset[PARTITION] = 10
    done(consumer, 10, settled=True)
    done(consumer, 11, settled=False)  # the worker stopped while it waited out an outage
    done(consumer, 12, settled=True)
    done(consumer, 13, settled=True)

    assert consumer._new_offset(PARTITION) == 11  # up to the event that must be read again
    assert consumer.unsettled() == {PARTITION: {11}}

    # Read again after the seek, and settled this time: the commits go on past it.
    consumer._committed_offset[PARTITION] = 11
    for offset in (11, 12, 13):
        done(consumer, offset, settled=True)
    assert consumer._new_offset(PARTITION) == 14
    assert consumer.unsettled() == {}


def test_a_skipped_event_holds_back_the_commit_even_one_past_it(app: faust.App) -> None:
    # Faust's own gap check lets a single missing offset through (acked 8 after committed 7
    # commits 9); an unsettled 7 is never passed.
    consumer = consumer_of(app)
    consumer._committed_offset[PARTITION] = 7
    done(consumer, 7, settled=False)
    done(consumer, 8, settled=True)
    new = consumer._new_offset(PARTITION)
    assert new == 7
    assert not consumer._should_commit(PARTITION, new)


def test_a_seek_forgets_the_unsettled_events_it_reads_again(app: faust.App) -> None:
    consumer = consumer_of(app)
    done(consumer, 3, settled=False)
    assert consumer.unsettled() == {PARTITION: {3}}
    consumer._unsettled.clear()  # what perform_seek does once every partition is read again
    assert consumer.unsettled() == {}


def test_the_flow_resumes_without_emptying_the_agents_queue(app: faust.App) -> None:
    queue: Any = app.FlowControlQueue(maxsize=10, clear_on_resume=True)  # as a channel's
    queue.put_nowait("read after the seek")
    app.flow_control.suspend()
    app.flow_control.resume()  # the end of a recovery
    assert queue.qsize() == 1
    app.flow_control.clear()  # partitions revoked: emptied, as before
    assert queue.qsize() == 0


def test_the_flow_stopping_interrupts_the_join(app: faust.App) -> None:
    consumer = consumer_of(app)
    consumer.stop_flow()
    assert consumer.flow_stopped.is_set()
    consumer.resume_flow()
    assert not consumer.flow_stopped.is_set()


def test_streams_use_the_python_iterator_whose_acks_go_through_the_consumer() -> None:
    assert faust.streams._CStreamIterator is None  # type: ignore[attr-defined]
