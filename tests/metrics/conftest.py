"""Fixtures of the metrics tests."""

from __future__ import annotations

import asyncpg
import pytest

from tests.conftest import OwnDatabase


@pytest.fixture
def own_db(own_database: OwnDatabase) -> asyncpg.Pool:
    """The pool of a database of the test's own (`own_database`)."""
    return own_database.pool
