"""Fixtures the uploader's tests share."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from notetaker.devstack.sources import RecordingSource


@pytest.fixture
async def source() -> AsyncIterator[RecordingSource]:
    """A provider's file server on loopback; `files` and `faults` set what it serves and how."""
    src = RecordingSource()
    await src.start()
    yield src
    await src.stop()
