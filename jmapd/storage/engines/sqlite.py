# -*- test-case-name: tests.storage.test_database -*-
"""
The SQLite engine: the embedded default, one database file under db-path.

Each worker thread owns one connection.  The database runs in WAL mode so
readers never wait for the writer, and write transactions start with
C{BEGIN IMMEDIATE} so two writers queue on the lock instead of failing
half-way with C{SQLITE_BUSY}.
"""

from __future__ import annotations

import os
import sqlite3
from typing import Any

_BUSY_TIMEOUT_MS = 30_000
_MMAP_SIZE = 1 << 34


class SQLiteEngine:
    """
    The few places where SQL differs between engines, for SQLite.
    """

    name = "sqlite"
    paramstyle = "qmark"
    IntegrityError = sqlite3.IntegrityError
    OperationalError = sqlite3.OperationalError
    #: One connection per thread (see L{jmapd.storage.database.Database}).
    pool_size: int | None = None

    def __init__(self, path: str) -> None:
        self.path = path

    def connect(self) -> sqlite3.Connection:
        """
        Open a connection in autocommit mode: transactions are begun
        explicitly by L{begin}, so their kind (deferred or immediate) is ours
        to choose.
        """
        directory = os.path.dirname(self.path)
        if directory:
            os.makedirs(directory, exist_ok=True)
        conn = sqlite3.connect(
            self.path, isolation_level=None, check_same_thread=False, timeout=_BUSY_TIMEOUT_MS / 1000
        )
        conn.execute(f"PRAGMA busy_timeout = {_BUSY_TIMEOUT_MS}")
        conn.execute("PRAGMA journal_mode = WAL")
        # FULL: the WAL is fsynced at every commit, so a committed write
        # survives a power failure, which is what an acknowledgement promises.
        conn.execute("PRAGMA synchronous = FULL")
        conn.execute("PRAGMA foreign_keys = ON")
        # Read the database through the page cache of the operating system
        # (address space only, not memory): list views then cost the same
        # whatever the account size, where SQLite's own 2 MB page cache
        # made them grow with the database (see docs/benchmarks.md).
        conn.execute(f"PRAGMA mmap_size = {_MMAP_SIZE}")
        return conn

    def begin(self, conn: Any, write: bool) -> None:
        conn.execute("BEGIN IMMEDIATE" if write else "BEGIN")

    def commit(self, conn: Any) -> None:
        conn.execute("COMMIT")

    def rollback(self, conn: Any) -> None:
        if conn.in_transaction:
            conn.execute("ROLLBACK")

    def convert_sql(self, sql: str) -> str:
        return sql

    def upsert_ignore(self) -> str:
        """
        The clause that makes an INSERT skip rows that already exist.
        """
        return "ON CONFLICT DO NOTHING"

    def lock_account(self, txn: Any, account_id: str) -> None:
        """
        Nothing to do: C{BEGIN IMMEDIATE} already made this transaction
        the only writer of the whole database.
        """

    def lock_blob(self, txn: Any, blob_id: str) -> None:
        """
        Nothing to do: a write transaction is the only writer of the whole
        database, so referencing a blob and deleting it cannot interleave.
        """

    def lock_schema(self, cursor: Any) -> None:
        """
        Nothing to do: the migration's write transaction holds the
        database's write lock.
        """

    def is_transient(self, error: BaseException) -> bool:
        """
        Writers queue on the lock (with a busy timeout) instead of failing,
        so no error is worth running a transaction again for.
        """
        return False

    def is_broken(self, conn: Any) -> bool:
        return False
