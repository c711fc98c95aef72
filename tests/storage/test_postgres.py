"""
Tests for L{jmapd.storage.engines.postgres}: the dialect, transactions and
locks on a real PostgreSQL server (see L{tests.pg}), two nodes writing one
account at once, start-up errors naming db-url, and the schema being the
same on both engines.
"""

import os
import threading

import psycopg
from twisted.trial.unittest import SynchronousTestCase

from jmapd.config import ConfigError, default_config, load_config
from jmapd.storage import (
    DatabaseUnavailable,
    accounts,
    changelog,
    emails,
    mailboxes,
    migrations,
    open_database,
)
from jmapd.storage.database import Database
from jmapd.storage.engines import engine_from_config
from jmapd.storage.engines.postgres import PostgreSQLEngine, convert_sql, redact
from jmapd.storage.engines.sqlite import SQLiteEngine
from jmapd.storage.migrations import SchemaTooNew
from tests import pg
from tests.mail.test_email_support import message


class ConvertSQLTests(SynchronousTestCase):
    def test_placeholders(self):
        """
        qmark placeholders become psycopg's %s; a literal % is doubled so
        psycopg does not read it as one.
        """
        self.assertEqual(
            convert_sql("SELECT x FROM t WHERE a = ? AND b LIKE 'a%' AND c = ?"),
            "SELECT x FROM t WHERE a = %s AND b LIKE 'a%%' AND c = %s",
        )

    def test_quoted_text_kept(self):
        """
        A ? inside a quoted string or identifier is not a placeholder.
        """
        self.assertEqual(convert_sql("SELECT '?', \"a?\" FROM t WHERE x = ?"), "SELECT '?', \"a?\" FROM t WHERE x = %s")

    def test_schema_types(self):
        """
        In CREATE and ALTER TABLE, SQLite's INTEGER (64 bits), REAL (a
        double) and BLOB become BIGINT, DOUBLE PRECISION and BYTEA.
        """
        self.assertEqual(
            convert_sql("CREATE TABLE t (a INTEGER NOT NULL, b REAL, c BLOB, d TEXT DEFAULT 'REAL')"),
            "CREATE TABLE t (a BIGINT NOT NULL, b DOUBLE PRECISION, c BYTEA, d TEXT DEFAULT 'REAL')",
        )
        self.assertEqual(convert_sql("ALTER TABLE t ADD COLUMN n integer"), "ALTER TABLE t ADD COLUMN n BIGINT")

    def test_types_only_in_schema(self):
        """
        Outside schema statements the type words are left alone (they
        may be column names or casts meant as written).
        """
        sql = "SELECT CAST(x AS INTEGER) FROM t WHERE real = ?"
        self.assertEqual(convert_sql(sql), "SELECT CAST(x AS INTEGER) FROM t WHERE real = %s")

    def test_redact(self):
        """
        Messages show the URL without its password.
        """
        self.assertEqual(redact("postgresql://jmapd:secret@db:5432/jmapd"), "postgresql://jmapd:***@db:5432/jmapd")
        self.assertEqual(redact("postgresql://db/jmapd"), "postgresql://db/jmapd")


class MigrationFilesTests(SynchronousTestCase):
    def test_engine_variant_replaces_shared_file(self):
        """
        A migration with a C{.postgresql.sql} file is read from it on
        PostgreSQL and from the shared file elsewhere; the versions are
        the same on both engines.
        """
        shared = dict(migrations.migrations("sqlite"))
        postgresql = dict(migrations.migrations("postgresql"))
        self.assertEqual(list(shared), list(postgresql))
        self.assertIn("fts5", shared[5])
        self.assertNotIn("fts5", postgresql[5])
        self.assertEqual(shared[1], postgresql[1])


class ConfigTests(SynchronousTestCase):
    def test_db_url(self):
        """
        db-url takes a postgresql:// (or postgres://) URL with a database
        name; anything else is an error naming the key.
        """
        config = load_config(None, environ={"JMAPD_DB_URL": "postgresql://u:p@127.0.0.1:5432/jmapd"})
        self.assertEqual(config.db_url, "postgresql://u:p@127.0.0.1:5432/jmapd")
        self.assertIsNone(load_config(None, environ={}).db_url)
        for wrong in ("mysql://h/db", "postgresql://h:99999/db", "postgresql://h/", "jmapd"):
            with self.assertRaises(ConfigError) as caught:
                load_config(None, environ={"JMAPD_DB_URL": wrong})
            self.assertIn("db-url (from JMAPD_DB_URL): expected a PostgreSQL URL", str(caught.exception))

    def test_engine_from_config(self):
        """
        Without db-url the engine is SQLite under db-path; with it,
        PostgreSQL with db-pool-size connections (by default one per
        worker thread) and the node-id (by default the host name).
        """
        directory = os.path.abspath(self.mktemp())
        engine = engine_from_config(default_config(db_path=directory))
        self.assertIsInstance(engine, SQLiteEngine)
        self.assertEqual(engine.path, os.path.join(directory, "jmapd.sqlite3"))
        engine = engine_from_config(default_config(db_url="postgresql://h/db", worker_pool_size=3))
        self.assertIsInstance(engine, PostgreSQLEngine)
        self.assertEqual((engine.pool_size, engine.node_id), (3, os.uname().nodename))
        engine = engine_from_config(default_config(db_url="postgresql://h/db", db_pool_size=7, node_id="n1"))
        self.assertEqual((engine.pool_size, engine.node_id), (7, "n1"))


class PostgreSQLTestCase(pg.OnPostgreSQL, SynchronousTestCase):
    def database(self, pool_size=None, url=None):
        """
        A Database on this test's PostgreSQL database (a second "node"
        with the same C{url}).
        """
        if url is None:
            url = pg.database_url(self)
        database = Database(PostgreSQLEngine(url, node_id="test", pool_size=pool_size))
        self.addCleanup(database.close)
        database.migrate()
        return database


class EngineTests(PostgreSQLTestCase):
    def test_read_transactions_are_read_only_snapshots(self):
        """
        A read transaction sees one snapshot from its first statement to
        its end, and cannot write.
        """
        database = self.database()
        database.run_sync(lambda txn: txn.execute("CREATE TABLE t (x INTEGER)"), write=True)
        other = Database(PostgreSQLEngine(database.engine.url))
        self.addCleanup(other.close)

        def read(txn):
            before = txn.fetchvalue("SELECT count(*) FROM t")
            other.run_sync(lambda t: t.execute("INSERT INTO t (x) VALUES (1)"), write=True)
            return before, txn.fetchvalue("SELECT count(*) FROM t")

        self.assertEqual(database.run_sync(read), (0, 0))
        self.assertEqual(database.run_sync(lambda txn: txn.fetchvalue("SELECT count(*) FROM t")), 1)
        self.assertRaises(
            psycopg.errors.ReadOnlySqlTransaction,
            database.run_sync,
            lambda txn: txn.execute("INSERT INTO t (x) VALUES (2)"),
        )

    def test_booleans_stored_as_integers(self):
        """
        Python booleans go into the schema's integer flag columns as 1
        and 0, as on SQLite.
        """
        database = self.database()
        database.run_sync(lambda txn: txn.execute("CREATE TABLE t (x INTEGER)"), write=True)
        database.run_sync(lambda txn: txn.executemany("INSERT INTO t (x) VALUES (?)", [(True,), (False,)]), write=True)
        self.assertEqual(database.run_sync(lambda txn: txn.fetchall("SELECT x FROM t ORDER BY x")), [(0,), (1,)])

    def test_integrity_error(self):
        """
        A unique violation is the engine's IntegrityError; inside a
        savepoint it leaves the rest of the transaction usable.
        """
        database = self.database()
        database.run_sync(lambda txn: txn.execute("CREATE TABLE t (x INTEGER PRIMARY KEY)"), write=True)

        def work(txn):
            txn.execute("INSERT INTO t (x) VALUES (1)")
            with self.assertRaises(database.engine.IntegrityError):
                with txn.savepoint():
                    txn.execute("INSERT INTO t (x) VALUES (1)")
            txn.execute("INSERT INTO t (x) VALUES (2)")

        database.run_sync(work, write=True)
        self.assertEqual(database.run_sync(lambda txn: txn.fetchall("SELECT x FROM t ORDER BY x")), [(1,), (2,)])

    def test_lock_account_makes_writers_wait(self):
        """
        A writer holding an account's lock makes another writer of the
        same account wait until it commits, and that one then reads what
        the first wrote; a writer of another account does not wait.
        """
        database = self.database()
        alice = database.run_sync(accounts.add_account, "alice", None, write=True).id
        bob = database.run_sync(accounts.add_account, "bob", None, write=True).id
        second = self.database(url=database.engine.url)
        holding, release = threading.Event(), threading.Event()
        results = {}

        def first(txn):
            txn.lock_account(alice)
            changelog.record_change(txn, alice, "Note", "n1", changelog.CREATED)
            holding.set()
            release.wait(30)

        def other_account():
            second.run_sync(lambda txn: txn.lock_account(bob), write=True)
            results["bob"] = True

        def same_account():
            def work(txn):
                txn.lock_account(alice)
                return changelog.get_modseq(txn, alice, "Note")

            results["alice"] = second.run_sync(work, write=True)

        thread = threading.Thread(target=database.run_sync, args=(first,), kwargs={"write": True})
        thread.start()
        self.assertTrue(holding.wait(30))
        other = threading.Thread(target=other_account)
        other.start()
        other.join(30)
        self.assertEqual(results, {"bob": True})
        waiting = threading.Thread(target=same_account)
        waiting.start()
        waiting.join(0.5)
        self.assertNotIn("alice", results)
        release.set()
        thread.join(30)
        waiting.join(30)
        self.assertEqual(results["alice"], database.run_sync(changelog.get_modseq, alice, "Note"))
        self.assertGreater(results["alice"], 0)

    def test_deadlock_retried(self):
        """
        Two transactions locking two accounts in opposite orders deadlock;
        the one PostgreSQL aborts is run again and both complete.
        """
        database = self.database(pool_size=2)
        a = database.run_sync(accounts.add_account, "a", None, write=True).id
        b = database.run_sync(accounts.add_account, "b", None, write=True).id
        both = threading.Barrier(2)
        attempts = []

        def work(txn, first, second):
            attempts.append(first)
            txn.lock_account(first)
            if len(attempts) <= 2:
                # Both hold their first lock before either asks for its second.
                both.wait(30)
            txn.lock_account(second)
            changelog.record_change(txn, first, "Note", "n", changelog.CREATED)

        threads = [
            threading.Thread(target=database.run_sync, args=(work, a, b), kwargs={"write": True}),
            threading.Thread(target=database.run_sync, args=(work, b, a), kwargs={"write": True}),
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        # At least one was run again.  Both may be: when the two detect
        # the deadlock at the same moment, PostgreSQL can abort both (seen
        # on a loaded machine), and their new attempts may meet again.
        self.assertGreaterEqual(len(attempts), 3)
        self.assertEqual(
            [database.run_sync(changelog.get_modseq, account, "Note") for account in (a, b)], [7, 7]
        )

    def test_pool_size_bounds_connections(self):
        """
        With a pool of 2, any number of threads share 2 connections.
        """
        database = self.database(pool_size=2)
        seen = set()
        lock = threading.Lock()

        def work(txn):
            with lock:
                seen.add(id(txn.conn))
            return txn.fetchvalue("SELECT 1")

        threads = [threading.Thread(target=database.run_sync, args=(work,)) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        self.assertLessEqual(len(seen), 2)
        self.assertLessEqual(len(database._connections), 2)

    def test_broken_connection_replaced(self):
        """
        When the server ends a connection, the failing transaction raises
        and the next one gets a new connection.
        """
        database = self.database(pool_size=1)
        pid = database.run_sync(lambda txn: txn.fetchvalue("SELECT pg_backend_pid()"))
        killer = Database(PostgreSQLEngine(database.engine.url))
        self.addCleanup(killer.close)
        killer.run_sync(lambda txn: txn.execute("SELECT pg_terminate_backend(?)", (pid,)), write=True)
        self.assertRaises(database.engine.OperationalError, database.run_sync, lambda txn: txn.fetchvalue("SELECT 1"))
        self.assertNotEqual(database.run_sync(lambda txn: txn.fetchvalue("SELECT pg_backend_pid()")), pid)


class TwoNodeRaceTests(PostgreSQLTestCase):
    """
    Two Database objects on one PostgreSQL database are two jmapd nodes:
    their threads write the same account at once.
    """

    def test_concurrent_writers_lose_nothing(self):
        """
        Threads of two nodes create Mailboxes, deliver Emails and flip
        their $seen keyword in one account at the same time: every change
        gets its own modseq, none is lost, and the Mailbox counts equal a
        recount of the Emails.
        """
        node_a = self.database(pool_size=3)
        node_b = self.database(pool_size=3, url=node_a.engine.url)
        store_directory = os.path.abspath(self.mktemp())
        from jmapd.blobs.store import FileBlobStore

        store = FileBlobStore(store_directory)
        account = node_a.run_sync(accounts.add_account, "alice", None, write=True).id
        inbox = node_a.run_sync(mailboxes.find_by_role, account, "inbox")
        start = node_a.run_sync(lambda txn: txn.fetchvalue("SELECT modseq FROM accounts WHERE id = ?", (account,)))
        rounds = 6
        errors = []
        go = threading.Barrier(6)
        modseqs = []
        modseq_lock = threading.Lock()

        def record(txn):
            with modseq_lock:
                modseqs.extend(txn.__dict__.get("changed_states", {}).get(account, {}).values())

        def deliver(node, worker):
            for n in range(rounds):
                raw = message(subject=f"w{worker} n{n}", message_id=f"{worker}.{n}@x", body=f"{worker} {n}\r\n")

                def work(txn, raw=raw):
                    created = emails.ingest(txn, store, account, raw, [inbox], [], 1_700_000_000_000, 0.0)
                    record(txn)
                    return created.id

                node.run_sync(work, write=True)

        def flip(node, worker):
            for n in range(rounds):
                def work(txn, n=n):
                    ids = [row["id"] for row in emails.get_rows(txn, account, None, ["id"])]
                    for email_id in ids[(worker + n) % 3 :: 3]:
                        keywords = emails.get_keywords(txn, account, [email_id])[email_id]
                        emails.update_email(
                            txn, account, email_id, keywords=[] if "$seen" in keywords else ["$seen"]
                        )
                    record(txn)

                node.run_sync(work, write=True)

        def create_mailboxes(node, worker):
            for n in range(rounds):
                def work(txn, n=n):
                    mailboxes.add_mailbox(txn, account, f"box {worker}.{n}")
                    record(txn)

                node.run_sync(work, write=True)

        def run(fn, node, worker):
            try:
                go.wait(30)
                fn(node, worker)
            except Exception as error:  # noqa: BLE001 - reported below
                errors.append(error)

        jobs = [
            (deliver, node_a, 0), (deliver, node_b, 1),
            (flip, node_a, 2), (flip, node_b, 3),
            (create_mailboxes, node_a, 4), (create_mailboxes, node_b, 5),
        ]
        threads = [threading.Thread(target=run, args=job) for job in jobs]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(120)
        self.assertEqual(errors, [])

        def check(txn):
            total = txn.fetchvalue("SELECT count(*) FROM emails WHERE account_id = ?", (account,))
            unread = txn.fetchvalue("SELECT count(*) FROM emails WHERE account_id = ? AND unread = 1", (account,))
            boxes = txn.fetchvalue("SELECT count(*) FROM mailboxes WHERE account_id = ?", (account,))
            counts = mailboxes.get_counts(txn, account, inbox)
            threads_ = txn.fetchvalue("SELECT count(*) FROM threads WHERE account_id = ?", (account,))
            modseq = txn.fetchvalue("SELECT modseq FROM accounts WHERE id = ?", (account,))
            rows = txn.fetchvalue("SELECT count(*) FROM changelog WHERE account_id = ?", (account,))
            return total, unread, boxes, counts, threads_, modseq, rows

        total, unread, boxes, counts, thread_count, modseq, rows = node_b.run_sync(check)
        self.assertEqual(total, 2 * rounds)
        self.assertEqual(boxes, len(mailboxes.DEFAULT_MAILBOXES) + 2 * rounds)
        self.assertEqual(counts, (total, unread, thread_count, unread))
        # Every change took its own modseq: the states recorded by the
        # committed transactions are distinct and none is above the
        # account's modseq.
        self.assertEqual(len(modseqs), len(set(modseqs)))
        self.assertLessEqual(max(modseqs), modseq)
        self.assertGreater(modseq, start)
        self.assertGreater(rows, 0)


class OpenDatabaseTests(PostgreSQLTestCase):
    def test_opens_and_migrates(self):
        """
        With db-url set, open_database migrates the PostgreSQL database
        and uses it (nothing is written under db-path).
        """
        url = pg.database_url(self, migrated=False)
        directory = os.path.abspath(self.mktemp())
        database = open_database(default_config(db_url=url, db_path=directory, worker_pool_size=2))
        self.addCleanup(database.close)
        self.assertEqual(database.engine.name, "postgresql")
        self.assertEqual(database.engine.pool_size, 2)
        self.assertEqual(database.migrate(), migrations.migrations()[-1][0])
        self.assertFalse(os.path.exists(os.path.join(directory, "jmapd.sqlite3")))

    def test_unreachable(self):
        """
        A server that does not answer stops start-up with a message
        naming db-url, without the password.
        """
        url = "postgresql://jmapd:secret@127.0.0.1:1/jmapd"
        with self.assertRaises(DatabaseUnavailable) as caught:
            open_database(default_config(db_url=url))
        message_ = str(caught.exception)
        self.assertTrue(message_.startswith("db-url: cannot use the PostgreSQL database postgresql://jmapd:***@"))
        self.assertNotIn("secret", message_)
        self.assertIsInstance(caught.exception, OSError)

    def test_no_such_database_or_user(self):
        """
        A database or role the server does not have is refused with the
        server's reason, naming db-url.
        """
        url = pg.database_url(self)
        missing = url.rsplit("/", 1)[0] + "/no_such_database"
        with self.assertRaises(DatabaseUnavailable) as caught:
            open_database(default_config(db_url=missing))
        self.assertIn("db-url:", str(caught.exception))
        self.assertIn("no_such_database", str(caught.exception))
        stranger = url.replace("postgresql://postgres@", "postgresql://stranger:pw@")
        with self.assertRaises(DatabaseUnavailable) as caught:
            open_database(default_config(db_url=stranger))
        self.assertIn("stranger", str(caught.exception))

    def test_schema_too_new(self):
        """
        A database migrated by a newer jmapd stops start-up, naming
        db-url.
        """
        url = pg.database_url(self)
        database = self.database(url=url)
        database.run_sync(lambda txn: txn.execute("INSERT INTO schema_version (version) VALUES (9999)"), write=True)
        with self.assertRaises(SchemaTooNew) as caught:
            open_database(default_config(db_url=url))
        self.assertIn("db-url postgresql://", str(caught.exception))
        self.assertIn("version 9999", str(caught.exception))

    def test_two_nodes_migrate_once(self):
        """
        Nodes starting at the same moment on a new database apply each
        migration once.
        """
        url = pg.database_url(self, migrated=False)
        errors = []

        def start():
            try:
                Database(PostgreSQLEngine(url)).migrate()
            except Exception as error:  # noqa: BLE001 - reported below
                errors.append(error)

        threads = [threading.Thread(target=start) for _ in range(3)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        self.assertEqual(errors, [])
        versions = self.database(url=url).run_sync(
            lambda txn: [row[0] for row in txn.fetchall("SELECT version FROM schema_version ORDER BY version")]
        )
        self.assertEqual(versions, [version for version, _ in migrations.migrations()])


class SchemaParityTests(PostgreSQLTestCase):
    def test_same_tables_and_columns(self):
        """
        After every migration, both engines have the same tables with the
        same columns (the full-text tables aside: FTS5's and PostgreSQL's
        differ by design), so an engine-specific migration file cannot
        drift from the shared one unnoticed.
        """
        sqlite = Database(SQLiteEngine(os.path.join(os.path.abspath(self.mktemp()), "jmapd.sqlite3")))
        self.addCleanup(sqlite.close)
        sqlite.migrate()
        postgresql = self.database()

        def sqlite_columns(txn):
            found = set()
            for (table,) in txn.fetchall("SELECT name FROM sqlite_master WHERE type = 'table'"):
                if not table.startswith(("email_fts", "sqlite_")):
                    found |= {(table, row[1]) for row in txn.fetchall(f"PRAGMA table_info({table})")}
            return found

        def postgresql_columns(txn):
            rows = txn.fetchall(
                "SELECT table_name, column_name FROM information_schema.columns WHERE table_schema = 'public'"
            )
            return {(t, c) for t, c in rows if not t.startswith("email_fts")}

        self.assertEqual(sqlite.run_sync(sqlite_columns), postgresql.run_sync(postgresql_columns))
