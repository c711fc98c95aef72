"""
Tests for L{jmapd.storage.database}, the SQLite engine and the schema
migrations, on a real SQLite file, and (the C{...OnPostgreSQL} classes)
on a real PostgreSQL database.
"""

import os
import sqlite3

from twisted.internet import defer
from twisted.trial.unittest import SynchronousTestCase

from jmapd.storage import accounts, migrations
from jmapd.storage.database import Database
from jmapd.storage.engines.postgres import PostgreSQLEngine
from jmapd.storage.engines.sqlite import SQLiteEngine
from jmapd.storage.migrations import SchemaTooNew
from tests import pg


def make_database(testcase, run_in_thread=None, account_hooks=True):
    """
    A migrated database in a fresh file under the test's directory.

    @param account_hooks: C{False} switches off, for this test, the
        account-creation hooks other modules register on import (default
        mailboxes), so that a new account starts at modseq 0 whatever else
        the test run imported.
    """
    if not account_hooks:
        testcase.patch(accounts, "account_created_hooks", [])
    database = Database(pg.make_engine(testcase), run_in_thread)
    database.migrate()
    testcase.addCleanup(database.close)
    return database


def table_names(database):
    """
    The names of the tables in the database, on either engine.
    """
    if database.engine.name == "sqlite":
        sql = "SELECT name FROM sqlite_master WHERE type = 'table'"
    else:
        sql = "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'"
    return database.run_sync(lambda txn: {row[0] for row in txn.fetchall(sql)})


def same_database(database):
    """
    A second Database (its own connections) on the same database.
    """
    engine = database.engine
    if engine.name == "sqlite":
        return Database(SQLiteEngine(engine.path))
    return Database(PostgreSQLEngine(engine.url))


class Boom(Exception):
    pass


class MigrationTests(SynchronousTestCase):
    def test_applies_every_migration(self):
        """
        migrate() brings a new database to the highest known version and
        creates the Core tables.
        """
        database = Database(pg.make_engine(self, migrated=False))
        self.addCleanup(database.close)
        highest = migrations.migrations()[-1][0]
        self.assertEqual(database.migrate(), highest)
        tables = table_names(database)
        self.assertTrue({"accounts", "account_addresses", "tokens", "blobs", "states", "changelog"} <= tables)

    def test_idempotent(self):
        """
        A second migrate() applies nothing: each version is recorded once.
        """
        database = make_database(self)
        database.migrate()
        versions = database.run_sync(lambda txn: [row[0] for row in txn.fetchall("SELECT version FROM schema_version")])
        self.assertEqual(versions, [version for version, _ in migrations.migrations()])

    def test_reopen(self):
        """
        A new Database on an existing file migrates to the same version
        without re-running migrations (which would fail on CREATE TABLE).
        """
        database = make_database(self)
        again = same_database(database)
        self.addCleanup(again.close)
        self.assertEqual(again.migrate(), migrations.migrations()[-1][0])

    def test_schema_too_new(self):
        """
        A database whose schema_version is above what this jmapd knows is
        refused with SchemaTooNew.
        """
        database = make_database(self)
        highest = migrations.migrations()[-1][0]
        database.run_sync(
            lambda txn: txn.execute("INSERT INTO schema_version (version) VALUES (?)", (highest + 1,)), write=True
        )
        self.assertRaises(SchemaTooNew, database.migrate)

    def test_statements_strip_comments(self):
        """
        Comments run to the end of the line and empty statements are
        dropped.
        """
        self.assertEqual(
            migrations._statements("-- a\nCREATE TABLE t (x INT); -- b\n;\nSELECT 1"),
            ["CREATE TABLE t (x INT)", "SELECT 1"],
        )


class MigrationFilesTests(SynchronousTestCase):
    def files(self, *names: str) -> str:
        directory = self.mktemp()
        os.makedirs(directory)
        for name in names:
            with open(os.path.join(directory, name), "w") as f:
                f.write(f"-- {name}\n")
        return directory

    def test_duplicate_number_refused(self) -> None:
        """
        Two shared migration files with one number (two branches that both
        took the next number) are refused, naming both, instead of one
        silently replacing the other.
        """
        directory = self.files("0001_a.sql", "0002_b.sql", "0002_c.sql")
        error = self.assertRaises(migrations.DuplicateMigration, migrations.migrations, None, directory)
        self.assertIn("0002_b.sql", str(error))
        self.assertIn("0002_c.sql", str(error))

    def test_engine_variant_replaces_shared(self) -> None:
        """
        An engine's own file for a version replaces the shared one for that
        engine only; it is not a duplicate.
        """
        directory = self.files("0001_a.sql", "0001_a.postgresql.sql", "0002_b.sql")
        self.assertEqual(
            migrations.migrations("postgresql", directory),
            [(1, "-- 0001_a.postgresql.sql\n"), (2, "-- 0002_b.sql\n")],
        )
        self.assertEqual(
            migrations.migrations("sqlite", directory), [(1, "-- 0001_a.sql\n"), (2, "-- 0002_b.sql\n")]
        )


class EngineTests(SynchronousTestCase):
    def test_wal_mode(self):
        """
        Connections run in WAL mode with foreign keys enforced.
        """
        database = make_database(self)
        self.assertEqual(database.run_sync(lambda txn: txn.fetchvalue("PRAGMA journal_mode")), "wal")
        self.assertEqual(database.run_sync(lambda txn: txn.fetchvalue("PRAGMA foreign_keys")), 1)

    def test_write_takes_lock_at_begin(self):
        """
        A write transaction begins IMMEDIATE: a second connection cannot
        start another writer while it is open.
        """
        database = make_database(self)
        other = sqlite3.connect(database.engine.path, isolation_level=None, timeout=0)
        self.addCleanup(other.close)

        def write(txn):
            self.assertRaises(sqlite3.OperationalError, other.execute, "BEGIN IMMEDIATE")

        database.run_sync(write, write=True)
        other.execute("BEGIN IMMEDIATE")
        other.execute("ROLLBACK")


class TransactionTests(SynchronousTestCase):
    def setUp(self):
        self.database = make_database(self)
        self.database.run_sync(lambda txn: txn.execute("CREATE TABLE t (x INTEGER)"), write=True)

    def values(self):
        return self.database.run_sync(lambda txn: [row[0] for row in txn.fetchall("SELECT x FROM t ORDER BY x")])

    def test_current_transaction(self):
        """
        Inside a transaction, current_transaction is that transaction (so
        code it calls can write in it); before and after, and after one
        that failed, there is none.
        """
        self.assertIsNone(self.database.current_transaction())
        seen = self.database.run_sync(lambda txn: self.database.current_transaction() is txn)
        self.assertTrue(seen)
        self.assertIsNone(self.database.current_transaction())

        def fail(txn):
            raise Boom()

        self.assertRaises(Boom, self.database.run_sync, fail)
        self.assertIsNone(self.database.current_transaction())

    def test_commit(self):
        """
        run_sync commits when the function returns and gives its result.
        """

        def insert(txn, value):
            txn.execute("INSERT INTO t (x) VALUES (?)", (value,))
            return "ok"

        self.assertEqual(self.database.run_sync(insert, 1, write=True), "ok")
        self.assertEqual(self.values(), [1])

    def test_rollback_on_exception(self):
        """
        When the function raises, nothing it wrote remains and the
        exception reaches the caller.
        """

        def fail(txn):
            txn.execute("INSERT INTO t (x) VALUES (1)")
            raise Boom()

        self.assertRaises(Boom, self.database.run_sync, fail, write=True)
        self.assertEqual(self.values(), [])

    def test_savepoint_rollback_keeps_outer(self):
        """
        A savepoint that raises undoes its own writes only; the rest of the
        transaction commits.
        """

        def work(txn):
            txn.execute("INSERT INTO t (x) VALUES (1)")
            try:
                with txn.savepoint():
                    txn.execute("INSERT INTO t (x) VALUES (2)")
                    raise Boom()
            except Boom:
                pass
            with txn.savepoint():
                txn.execute("INSERT INTO t (x) VALUES (3)")

        self.database.run_sync(work, write=True)
        self.assertEqual(self.values(), [1, 3])

    def test_nested_savepoints(self):
        """
        An inner savepoint's rollback keeps the outer savepoint's writes.
        """

        def work(txn):
            with txn.savepoint():
                txn.execute("INSERT INTO t (x) VALUES (1)")
                try:
                    with txn.savepoint():
                        txn.execute("INSERT INTO t (x) VALUES (2)")
                        raise Boom()
                except Boom:
                    pass

        self.database.run_sync(work, write=True)
        self.assertEqual(self.values(), [1])

    def test_after_commit_runs_after_commit(self):
        """
        after_commit callbacks run once the commit happened: they can see
        the committed data from another connection.
        """
        seen = []
        other = same_database(self.database)
        self.addCleanup(other.close)

        def callback():
            seen.append(other.run_sync(lambda txn: [row[0] for row in txn.fetchall("SELECT x FROM t")]))

        def work(txn):
            txn.execute("INSERT INTO t (x) VALUES (7)")
            txn.after_commit(callback)
            self.assertEqual(seen, [])

        self.database.run_sync(work, write=True)
        self.assertEqual(seen, [[7]])

    def test_after_commit_not_run_on_rollback(self):
        """
        A transaction that rolls back never runs its callbacks.
        """
        called = []

        def work(txn):
            txn.after_commit(lambda: called.append(1))
            raise Boom()

        self.assertRaises(Boom, self.database.run_sync, work, write=True)
        self.assertEqual(called, [])

    def test_fetchvalue_default(self):
        """
        fetchvalue gives the default when there is no row.
        """
        self.assertEqual(self.database.run_sync(lambda txn: txn.fetchvalue("SELECT x FROM t", (), 42)), 42)


class RunInteractionTests(SynchronousTestCase):
    def setUp(self):
        self.database = make_database(self, lambda fn, *args: defer.maybeDeferred(fn, *args))
        self.database.run_sync(lambda txn: txn.execute("CREATE TABLE t (x INTEGER)"), write=True)

    def test_result_after_callbacks(self):
        """
        run_interaction fires with the function's result after the
        after-commit callbacks ran.
        """
        order = []

        def work(txn):
            txn.execute("INSERT INTO t (x) VALUES (1)")
            txn.after_commit(lambda: order.append("callback"))
            return "result"

        d = self.database.run_interaction(work, write=True)
        d.addCallback(lambda result: order.append(result))
        self.successResultOf(d)
        self.assertEqual(order, ["callback", "result"])

    def test_failing_callback_logged(self):
        """
        An after-commit callback that raises is logged; the others still
        run and the result is delivered.
        """
        called = []

        def work(txn):
            txn.after_commit(lambda: 1 / 0)
            txn.after_commit(lambda: called.append(1))
            return 5

        self.assertEqual(self.successResultOf(self.database.run_interaction(work, write=True)), 5)
        self.assertEqual(called, [1])
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 1)

    def test_failure(self):
        """
        A raising function gives a failed Deferred and no callbacks run.
        """
        called = []

        def work(txn):
            txn.after_commit(lambda: called.append(1))
            raise Boom()

        self.failureResultOf(self.database.run_interaction(work, write=True), Boom)
        self.assertEqual(called, [])


pg.add_postgresql_variants(globals(), MigrationTests, TransactionTests, RunInteractionTests)
