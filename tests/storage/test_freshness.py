"""
Tests for L{jmapd.storage.freshness}: the counter that tells whether
anything was committed to the database since it was last read.
"""

from __future__ import annotations

import os
import sqlite3

from twisted.trial.unittest import SynchronousTestCase

from jmapd.storage.database import Database
from jmapd.storage.engines.sqlite import SQLiteEngine
from jmapd.storage.freshness import change_counter


class ChangeCounterTests(SynchronousTestCase):
    def setUp(self) -> None:
        directory = os.path.abspath(self.mktemp())
        os.makedirs(directory)
        self.path = os.path.join(directory, "jmapd.db")
        self.database = Database(SQLiteEngine(self.path))
        self.database.migrate()
        self.addCleanup(self.database.close)

    def test_unchanged_without_commit(self) -> None:
        """
        Reading the counter twice with only read transactions in between
        gives the same value: nothing was committed.
        """
        counter = self.database.change_counter()
        assert counter is not None
        before = counter.value()
        self.database.run_sync(lambda txn: txn.fetchall("SELECT * FROM accounts"))
        self.assertEqual(counter.value(), before)

    def test_changed_by_commit_of_this_process(self) -> None:
        """
        A write committed through the database's own connections moves the
        counter.
        """
        counter = self.database.change_counter()
        assert counter is not None
        before = counter.value()
        self.database.run_sync(
            lambda txn: txn.execute("INSERT INTO server_settings (name, value) VALUES ('x', 1)"), write=True
        )
        self.assertNotEqual(counter.value(), before)

    def test_changed_by_another_connection(self) -> None:
        """
        A commit by a connection the database does not know (another
        process, such as jmapd-admin) moves the counter too.
        """
        counter = self.database.change_counter()
        assert counter is not None
        before = counter.value()
        other = sqlite3.connect(self.path, isolation_level=None)
        self.addCleanup(other.close)
        other.execute("INSERT INTO server_settings (name, value) VALUES ('y', 2)")
        self.assertNotEqual(counter.value(), before)

    def test_not_for_other_engines(self) -> None:
        """
        An engine without a cheap change counter (PostgreSQL) gets none, so
        callers take their ordinary path.
        """

        class Engine:
            name = "postgresql"

        self.assertIsNone(change_counter(Engine()))
