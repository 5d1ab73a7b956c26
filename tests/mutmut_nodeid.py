"""A pytest plugin for the mutation run only (`make mutation`, docs/testing.md).

mutmut 3.7 reads `item._nodeid` to learn which test reached which function; pytest 9.1 dropped
that attribute (mutmut 3.8 reads `item.nodeid`, but it needs click 8.4, which faust refuses).
Each collected test gets the attribute back; nothing else changes.
"""

from __future__ import annotations

import pytest


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        item._nodeid = item.nodeid  # type: ignore[attr-defined]
