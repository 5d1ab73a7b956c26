"""Faust as the join needs it: an offset is committed only for what the join settled, and no
record fetched while the worker starts or rebalances is dropped without being read again.

**Commits follow the join, not the stream.** Faust acks every event its stream lets go of: the
one the agent finished, but also one whose handler raised or was cancelled (the stream's
`finally`), and one the stream skipped because it arrived while the flow was stopped or in an
older consumer generation (a rebalance, the worker's start). An acked offset is committed, and a
committed event is never read again: that skipped event was lost. Here the agent `settle`s an
event once its effects are durable, its dead letter acknowledged or it is parked; an ack of an
event that was not settled commits nothing, and no later ack on its partition commits past it.
It is read again from the committed offset after the next seek (every rebalance ends with one),
or by the next worker after a restart. Reading an event twice is harmless (the join is
idempotent); never reading it is a meeting that never completes.

`flow_stopped` is set while Faust has stopped the flow of events (a rebalance, or the worker
stopping) and waits for the agent: the join gives up waiting out an outage then, unsettled.

The stream iterator is Faust's Python one (`_CStreamIterator` off): the Cython one acks events
inline, past `Consumer.ack`, and drops a skipped event without acking it at all.

**Queues kept on resume.** When recovery completes, Faust seeks the stream partitions to their
committed offsets and only then resumes the flow, and resuming empties every stream queue
(`mode`'s `FlowControlEvent.resume`). The fetcher runs meanwhile (it was resumed to read the
changelog), so records fetched after the seek were put in the agent's queue and thrown away: read
past, never acked, never read again until a restart. Seen here: of six events published as the
worker's recovery ended, one was handled and five never were. `FlowControl` resumes without
emptying the queues; the queues are still emptied when partitions are revoked (`App.
_on_partitions_revoked` clears them explicitly), and a record left from an older generation is
skipped by the stream, unsettled, and read again after the seek.

**Uncommitted partitions.** When recovery completes, Faust resumes the stream partitions, then
seeks them to their committed offsets, then lets the streams run (`faust/tables/recovery.py`,
`on_recovery_completed`). A record fetched in between reaches a stream that is still suspended and
is skipped; the seek is what brings it back. But aiokafka's `seek_to_committed` only seeks where
the committed offset is above 0, so on a partition nobody has committed yet (a new topic, or the
first events after a deploy) the skipped record is never read again by this worker. The fix
completes the seek: stream partitions without a committed offset go back to their beginning,
which is what `auto_offset_reset="earliest"` means.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from typing import Any

import faust
import faust.streams
from aiokafka import TopicPartition
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import TP, Message
from faust.types.tuples import ack_lock
from mode.utils.futures import notify
from mode.utils.objects import cached_property
from mode.utils.queues import FlowControlEvent

from notetaker.common.logs import get_logger

log = get_logger(__name__)

# Every event goes through `Consumer.ack` below (see the module's docstring).
faust.streams._CStreamIterator = None  # type: ignore[attr-defined]


class Consumer(faust_aiokafka.Consumer):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._settled: set[tuple[TP, int]] = set()
        self._unsettled: defaultdict[TP, set[int]] = defaultdict(set)
        self.flow_stopped = asyncio.Event()

    def settle(self, message: Message) -> None:
        """The event of `message` is applied, dead-lettered or parked: its ack may commit it."""
        self._settled.add((message.tp, message.offset))
        unsettled = self._unsettled.get(message.tp)
        if unsettled:
            unsettled.discard(message.offset)

    def unsettled(self) -> dict[TP, set[int]]:
        """Offsets acked without being settled, by partition: each holds its partition's commits
        back until it is read again."""
        return {tp: set(offsets) for tp, offsets in self._unsettled.items() if offsets}

    def ack(self, message: Message) -> bool:
        key = (message.tp, message.offset)
        if key in self._settled:
            self._settled.discard(key)
            return bool(super().ack(message))
        with ack_lock:
            if message.acked:
                return False
            # Done with, as far as the stream and the shutdown (`wait_empty`) are concerned;
            # never commitable.
            message.acked = True
            self._unacked_messages.discard(message)
            if self.app.topics.acks_enabled_for(message.topic):
                self._unsettled[message.tp].add(message.offset)
            notify(self._waiting_for_ack)
        log.info(
            "consumer.event_unsettled",
            topic=message.topic,
            partition=message.partition,
            offset=message.offset,
        )
        return False

    def _new_offset(self, tp: TP) -> int | None:
        offset: int | None = super()._new_offset(tp)
        if offset is None:
            return None
        committed = self._committed_offset[tp]
        holding = [o for o in self._unsettled.get(tp, ()) if committed is None or o >= committed]
        if holding and min(holding) < offset:
            return min(holding)  # commit up to the first unsettled event, never past it
        return offset

    def stop_flow(self) -> None:
        super().stop_flow()
        self.flow_stopped.set()

    def resume_flow(self) -> None:
        super().resume_flow()
        self.flow_stopped.clear()

    async def perform_seek(self) -> None:
        await super().perform_seek()
        # Every partition is read again from its committed offset, the unsettled events with it.
        self._unsettled.clear()
        changelogs = self.app.tables.changelog_topics  # stream partitions are all the others
        fresh = {
            tp
            for tp in self.assignment()
            if tp.topic not in changelogs and not self._committed_offset.get(tp)
        }
        if fresh:
            await self._thread.seek_to_beginning(
                *(TopicPartition(tp.topic, tp.partition) for tp in fresh)
            )
            for tp in fresh:
                self._read_offset[tp] = None
            log.info("consumer.seek_uncommitted_to_beginning", partitions=len(fresh))


class Transport(faust_aiokafka.Transport):
    Consumer = Consumer


class FlowControl(FlowControlEvent):
    """Faust's flow control of the stream queues, resuming without emptying them."""

    def resume(self) -> None:
        self._suspend.clear()
        self._resume.set()


class App(faust.App):
    @cached_property
    def flow_control(self) -> FlowControlEvent:
        return FlowControl(loop=self.loop)
