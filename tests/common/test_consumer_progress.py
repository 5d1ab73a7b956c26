"""Offsets are committed only up to the first unfinished event of a partition."""

from __future__ import annotations

from notetaker.common.consumer import _PartitionProgress


def test_commit_point_waits_for_the_lowest_pending_offset() -> None:
    progress = _PartitionProgress()
    progress.pending |= {10, 11, 12}
    progress.pending.discard(11)
    progress.done.add(11)
    assert progress.commit_point() is None  # 10 still running
    progress.pending.discard(10)
    progress.done.add(10)
    assert progress.commit_point() == 12  # 10 and 11 done, 12 running
    progress.pending.discard(12)
    progress.done.add(12)
    assert progress.commit_point() == 13
    assert progress.commit_point() is None  # nothing new
