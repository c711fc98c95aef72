# -*- test-case-name: tests.storage.test_freshness -*-
"""
Has anything been committed to the database since I last looked?

A request that reads no stored data (only Core/echo calls) still has to
answer with the Session state and only for credentials that are still
valid, both of which live in the database.  Asking the database costs a
worker-thread hop and a transaction, most of the cost of such a request.
L{ChangeCounter} answers the question without either, so the API can
reuse what it learnt in an earlier transaction for as long as nothing at
all has been committed since, by this process or any other.

SQLite says it exactly and cheaply: C{PRAGMA data_version} on a
connection changes whenever another connection (of any process) commits,
and in WAL mode it reads the shared-memory index, not the file.  The
counter keeps one connection of its own for the reactor thread and never
writes with it.  PostgreSQL has no such counter, so L{change_counter}
gives C{None} there and every request takes the ordinary path.
"""

from __future__ import annotations

import sqlite3
from typing import Any


class ChangeCounter:
    """
    A value that differs after every commit to a SQLite database.

    Use it from one thread (the reactor's).
    """

    def __init__(self, path: str) -> None:
        self._path = path
        self._conn: sqlite3.Connection | None = None

    def value(self) -> int:
        """
        The current counter value: equal to an earlier one only if nothing
        was committed in between.
        """
        if self._conn is None:
            self._conn = sqlite3.connect(self._path, isolation_level=None, check_same_thread=False)
        row = self._conn.execute("PRAGMA data_version").fetchone()
        return int(row[0])

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


def change_counter(engine: Any) -> ChangeCounter | None:
    """
    A L{ChangeCounter} for C{engine}'s database, or C{None} when the
    engine cannot tell cheaply (PostgreSQL).
    """
    if getattr(engine, "name", None) == "sqlite":
        return ChangeCounter(engine.path)
    return None
