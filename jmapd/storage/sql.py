# -*- test-case-name: tests.storage.test_database -*-
"""
Small helpers for the SQL both engines share: C{IN (...)} lists of
placeholders, sent in chunks that stay within every engine's limit on
parameters per statement.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

#: Values per C{IN (...)} list (SQLite allowed 999 parameters before 3.32).
CHUNK = 500


def chunks(items: Sequence[Any]) -> Iterator[Sequence[Any]]:
    """
    C{items} in slices of at most L{CHUNK}, in order.
    """
    for start in range(0, len(items), CHUNK):
        yield items[start : start + CHUNK]


def marks(count: int) -> str:
    """
    C{count} comma-separated placeholders, for C{IN ({marks})}.
    """
    return ", ".join("?" * count)
