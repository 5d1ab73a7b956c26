"""Faust's Kafka transport with one fix: nothing fetched during a rebalance is lost on a partition
that has no committed offset yet.

When recovery completes, Faust resumes the stream partitions, then seeks them to their committed
offsets, then lets the streams run (`faust/tables/recovery.py`, `on_recovery_completed`). A record
fetched in between reaches a stream that is still suspended and is skipped; the seek is what
brings it back. But aiokafka's `seek_to_committed` only seeks where the committed offset is above 0,
so on a partition nobody has committed yet (a new topic, or the first events after a deploy) the
skipped record is never read again by this worker. Seen here: the `thumbnail.generated` that
arrived while the join worker restarted was read only after the next restart.

The fix completes the seek: stream partitions without a committed offset go back to their
beginning, which is what `auto_offset_reset="earliest"` means. A record read twice is harmless (the
join is idempotent); a record never read is a meeting that never completes.
"""

from __future__ import annotations

from aiokafka import TopicPartition
from faust.transport.drivers import aiokafka as faust_aiokafka

from notetaker.common.logs import get_logger

log = get_logger(__name__)


class Consumer(faust_aiokafka.Consumer):
    async def perform_seek(self) -> None:
        await super().perform_seek()
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
