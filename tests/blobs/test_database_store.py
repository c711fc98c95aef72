"""
Tests for L{jmapd.blobs.database.DatabaseBlobStore}: the behaviours
tests/blobs/test_store.py pins down for files, on the database store.

The store runs on either engine, so these run on SQLite and, as the
C{...OnPostgreSQL} variant, on PostgreSQL.
"""

import io
import os

from twisted.internet.defer import ensureDeferred
from twisted.trial.unittest import SynchronousTestCase

from jmapd.blobs.database import DatabaseBlobStore, PendingBlob, open_blob_store
from jmapd.blobs.store import blob_id_of
from jmapd.config import default_config
from jmapd.storage import blob_directory, open_database
from jmapd.storage.database import Database
from tests import pg
from tests.blobs.test_store import ContentAddressedTests
from tests.ingest.support import LMTPTestCase, message
from tests.web.test_blobs import download, uploaded

#: A small row size, so that a few hundred bytes span several rows.
CHUNK = 100


class Boom(Exception):
    pass


class DatabaseBlobStoreTests(ContentAddressedTests, SynchronousTestCase):
    def setUp(self):
        self.engine = pg.make_engine(self)
        self.database = Database(self.engine)
        self.database.migrate()
        self.addCleanup(self.database.close)
        self.store = DatabaseBlobStore(self.database, chunk_size=CHUNK)

    def rows(self, sql, *params):
        return self.database.run_sync(lambda txn: txn.fetchall(sql, params))

    def chunk_rows(self):
        """
        Every row of blob_chunks as (blob_id, seq, length), in order.
        """
        return [
            (row[0], row[1], len(row[2]))
            for row in self.rows("SELECT blob_id, seq, data FROM blob_chunks ORDER BY blob_id, seq")
        ]

    def test_same_content_same_id(self):
        """
        Storing the same bytes twice (whole or streamed) gives the same id
        and one copy, leaving no temporary rows; different bytes give
        another id.
        """
        data = os.urandom(CHUNK * 3 + 1)
        first = self.store.put(data)
        second = self.store.put_file(io.BytesIO(data))
        self.assertEqual(first, second)
        self.assertNotEqual(first, self.store.put(b"other"))
        self.assertEqual(
            [row for row in self.chunk_rows() if row[0] == first],
            [(first, 0, CHUNK), (first, 1, CHUNK), (first, 2, CHUNK), (first, 3, 1)],
        )
        self.assertEqual({row[0] for row in self.chunk_rows()}, {first, blob_id_of(b"other")})

    def test_put_file_from_position(self):
        """
        put_file stores from the file's current position to the end, in
        rows of at most the chunk size.
        """
        data = os.urandom(CHUNK * 2 + 7)
        source = io.BytesIO(b"skip" + data)
        source.seek(4)
        blob_id = self.store.put_file(source)
        self.assertEqual(blob_id, blob_id_of(data))
        self.assertEqual(self.store.read(blob_id), data)
        self.assertEqual(self.store.size(blob_id), len(data))
        self.assertEqual([row[2] for row in self.chunk_rows()], [CHUNK, CHUNK, 7])

    def test_put_chunks_regrouped(self):
        """
        put_chunks cuts the stream into rows of the chunk size whatever
        the sizes of the pieces it is given.
        """
        pieces = [b"a" * 30, b"b" * 150, b"c" * 5, b"", b"d" * 65]
        blob_id = self.store.put_chunks(iter(pieces))
        self.assertEqual(self.store.read(blob_id), b"".join(pieces))
        self.assertEqual([row[2] for row in self.chunk_rows()], [CHUNK, CHUNK, 50])

    def test_open_reads_row_by_row(self):
        """
        open returns a file object that fetches one row when its reader
        reaches it, not the whole blob at once.
        """
        data = os.urandom(CHUNK * 3)
        blob_id = self.store.put(data)
        fetched = []
        original = self.store._chunk

        def chunk(blob_id, seq):
            fetched.append(seq)
            return original(blob_id, seq)

        self.patch(self.store, "_chunk", chunk)
        with self.store.open(blob_id) as f:
            self.assertEqual(f.read(10), data[:10])
            self.assertEqual(fetched, [0])
            self.assertEqual(f.read(CHUNK), data[10 : CHUNK + 10])
            self.assertEqual(fetched, [0, 1])
            self.assertEqual(f.read(), data[CHUNK + 10 :])
            self.assertEqual(f.read(5), b"")
        self.assertEqual(fetched, [0, 1, 2])

    def test_empty(self):
        """
        The empty blob is stored (with no rows of content) and reads back
        empty.
        """
        blob_id = self.store.put(b"")
        self.assertTrue(self.store.exists(blob_id))
        self.assertEqual(self.store.size(blob_id), 0)
        self.assertEqual(self.store.read(blob_id), b"")
        with self.store.open(blob_id) as f:
            self.assertEqual(f.read(), b"")
        self.assertEqual(self.store.put_file(io.BytesIO(b"")), blob_id)

    def test_durable_on_return(self):
        """
        When put returns, the blob is committed: another connection to the
        database reads it.
        """
        blob_id = self.store.put(b"durable")
        other = Database(self.engine)
        self.addCleanup(other.close)
        self.assertEqual(DatabaseBlobStore(other).read(blob_id), b"durable")

    def test_writeThenSync(self):
        """
        write accepts a blob without storing it; sync stores a whole group
        in one transaction; put_many stores several, returning their ids
        in order (the same content twice is stored once).
        """
        written = [self.store.write(data) for data in (b"one", b"two", b"one")]
        self.assertEqual(written[0], PendingBlob(blob_id_of(b"one"), b"one"))
        self.assertFalse(self.store.exists(written[0].blob_id))
        transactions = []
        original = self.database.run_sync

        def run_sync(fn, *args, write=False):
            transactions.append(write)
            return original(fn, *args, write=write)

        self.patch(self.database, "run_sync", run_sync)
        self.store.sync(written)
        self.assertEqual(transactions, [True])
        self.store.sync([])
        self.assertEqual(transactions, [True])
        self.assertEqual(self.store.read(written[1].blob_id), b"two")
        self.assertEqual(self.store.put_many([b"a", b"b", b"a"]), [blob_id_of(b"a"), blob_id_of(b"b"), blob_id_of(b"a")])
        self.assertEqual(len(self.rows("SELECT blob_id FROM blob_data")), 4)

    def test_writeIn(self):
        """
        write_in stores a blob in the caller's transaction: readable in
        it, stored when it commits, and gone, bytes and all, when it rolls
        back; storing the same bytes again there is not an error.
        """

        def write(txn, data, fail):
            blob_id = self.store.write_in(txn, data)
            self.assertEqual(self.store.write_in(txn, data), blob_id)
            self.assertEqual(txn.fetchvalue("SELECT size FROM blob_data WHERE blob_id = ?", (blob_id,)), len(data))
            if fail:
                raise Boom()
            return blob_id

        data = os.urandom(CHUNK * 2 + 1)
        self.assertRaises(Boom, self.database.run_sync, write, data, True, write=True)
        self.assertEqual(self.rows("SELECT blob_id FROM blob_data"), [])
        self.assertEqual(self.chunk_rows(), [])
        blob_id = self.database.run_sync(write, data, False, write=True)
        self.assertEqual(blob_id, blob_id_of(data))
        self.assertEqual(self.store.read(blob_id), data)
        self.assertEqual([row[2] for row in self.chunk_rows()], [CHUNK, CHUNK, 1])
        self.database.run_sync(self.store.delete_in, blob_id, write=True)
        self.assertFalse(self.store.exists(blob_id))

    def test_failure_stores_nothing(self):
        """
        When the stream fails half-way, its transaction is rolled back:
        no blob and no row of it remain.
        """

        def chunks():
            yield b"x" * (CHUNK * 2)
            raise Boom()

        self.assertRaises(Boom, self.store.put_chunks, chunks())
        self.assertEqual(self.chunk_rows(), [])
        self.assertEqual(self.rows("SELECT blob_id FROM blob_data"), [])

    def test_delete(self):
        """
        delete removes the blob and its rows; deleting a missing blob is
        not an error; a missing blob cannot be read, sized or opened.
        """
        blob_id = self.store.put(b"gone" * 100)
        kept = self.store.put(b"kept")
        self.store.delete(blob_id)
        self.assertFalse(self.store.exists(blob_id))
        self.store.delete(blob_id)
        self.assertRaises(FileNotFoundError, self.store.read, blob_id)
        self.assertRaises(FileNotFoundError, self.store.size, blob_id)
        self.assertRaises(FileNotFoundError, self.store.open, blob_id)
        self.assertEqual({row[0] for row in self.chunk_rows()}, {kept})

    def test_deletedWhileRead(self):
        """
        A blob deleted while a reader is part-way through it makes the
        next read fail, rather than end early as if complete.
        """
        data = os.urandom(CHUNK * 3)
        blob_id = self.store.put(data)
        f = self.store.open(blob_id)
        self.addCleanup(f.close)
        self.assertEqual(f.read(CHUNK), data[:CHUNK])
        self.store.delete(blob_id)
        self.assertRaises(FileNotFoundError, f.read)

    def test_not_a_blob_id(self):
        """
        Anything but a blob id (a path, say) never names a blob.
        """
        self.assertFalse(self.store.exists("../../etc/passwd"))
        self.assertRaises(FileNotFoundError, self.store.read, "../x")
        self.assertRaises(FileNotFoundError, self.store.open, "tmp-0")
        self.store.delete("../x")


class OpenBlobStoreTests(SynchronousTestCase):
    """
    open_blob_store gives the store blob-store names.
    """

    def test_database(self):
        """
        With blob-store database, blobs go to the db-url database: a blob
        one store puts, a store opened later finds.
        """
        changes = {"db_url": pg.database_url(self)}
        config = default_config(db_path=os.path.abspath(self.mktemp()), blob_store="database", **changes)
        store = open_blob_store(config)
        self.addCleanup(store.close)
        self.assertIsInstance(store, DatabaseBlobStore)
        blob_id = store.put(b"shared")
        again = open_blob_store(config)
        self.addCleanup(again.close)
        self.assertEqual(again.read(blob_id), b"shared")
        self.assertFalse(os.path.exists(blob_directory(config)))


class SharedStoreTests(SynchronousTestCase):
    """
    On SQLite, the store shares the metadata's Database: what it does
    while the calling thread has a transaction open joins that
    transaction (a transaction of its own would wait for the database's
    one writer, which is that transaction).
    """

    def setUp(self):
        config = default_config(db_path=os.path.abspath(self.mktemp()), blob_store="database")
        self.database = open_database(config)
        self.addCleanup(self.database.close)
        self.store = open_blob_store(config, self.database)

    def test_shared(self):
        """
        open_blob_store given the SQLite metadata Database returns a store
        on that Database, which closing the store leaves open.
        """
        self.assertIsInstance(self.store, DatabaseBlobStore)
        self.assertIs(self.store.database, self.database)
        self.store.close()
        self.assertEqual(self.database.run_sync(lambda txn: txn.fetchvalue("SELECT 1")), 1)

    def test_joinsOpenTransaction(self):
        """
        A blob put, read and deleted inside a write transaction is part of
        it: gone when it rolls back, stored when it commits; with no
        transaction open, put commits one of its own.
        """

        def upload(txn, data, fail):
            blob_id = self.store.put(data)
            self.assertEqual(self.store.read(blob_id), data)
            self.store.delete(self.store.put(b"temporary"))
            self.assertFalse(self.store.exists(blob_id_of(b"temporary")))
            if fail:
                raise Boom()
            return blob_id

        self.assertRaises(Boom, self.database.run_sync, upload, b"rolled back", True, write=True)
        self.assertFalse(self.store.exists(blob_id_of(b"rolled back")))
        blob_id = self.database.run_sync(upload, b"kept", False, write=True)
        self.assertEqual(self.store.read(blob_id), b"kept")
        alone = self.store.put(b"alone")
        other = Database(self.database.engine)
        self.addCleanup(other.close)
        self.assertEqual(DatabaseBlobStore(other).read(alone), b"alone")


class DatabaseStoreServerTests(LMTPTestCase):
    """
    A server with blob-store database (on SQLite, and on PostgreSQL in the
    variant), end to end: every path that stores or reads a blob uses the
    database, and nothing is written under db-path's blobs directory.
    """

    def test_uploadImportDeliverDownload(self):
        """
        An upload is downloaded back and imported as an Email whose body
        is read from it; a message delivered over LMTP becomes an Email
        whose message is downloaded as delivered; the blobs are rows of
        the database, not files.
        """
        using = ["urn:ietf:params:jmap:core", "urn:ietf:params:jmap:mail"]

        async def run():
            server, _, port = await self.start_lmtp(blob_store="database")
            self.assertIsInstance(server.env.blobs, DatabaseBlobStore)
            alice = server.add_account("alice", ("alice@example.com",))

            raw = message(subject="Uploaded", body="Imported body.")
            blob_id = await uploaded(self, server, alice, raw)
            response, body = await download(server, alice, blob_id)
            self.assertEqual((response.code, body), (200, raw))

            inbox = server.env.database.run_sync(
                lambda txn: txn.fetchvalue(
                    "SELECT id FROM mailboxes WHERE account_id = ? AND role = 'inbox'", (alice,)
                )
            )
            result = await server.api(
                [["Email/import", {"accountId": alice, "emails": {
                    "i": {"blobId": blob_id, "mailboxIds": {inbox: True}}}}, "0"]],
                using=using,
            )
            email_id = result["methodResponses"][0][1]["created"]["i"]["id"]
            result = await server.api(
                [["Email/get", {"accountId": alice, "ids": [email_id],
                                "properties": ["subject", "bodyValues", "textBody"],
                                "fetchTextBodyValues": True}, "0"]],
                using=using,
            )
            (imported,) = result["methodResponses"][0][1]["list"]
            self.assertEqual(imported["subject"], "Uploaded")
            part = imported["textBody"][0]["partId"]
            self.assertEqual(imported["bodyValues"][part]["value"].strip(), "Imported body.")

            sent = message(subject="Delivered", body="Over LMTP.")

            def deliver():
                client = self.connect(port)
                client.sendmail("bob@example.org", ["alice@example.com"], sent)
                client.quit()

            await self.in_thread(deliver)
            result = await server.api(
                [
                    ["Email/query", {"accountId": alice, "filter": {"subject": "Delivered"}}, "0"],
                    ["Email/get", {"accountId": alice, "#ids": {
                        "resultOf": "0", "name": "Email/query", "path": "/ids"},
                        "properties": ["blobId", "preview"]}, "1"],
                ],
                using=using,
            )
            (delivered,) = result["methodResponses"][1][1]["list"]
            self.assertEqual(delivered["preview"], "Over LMTP.")
            response, body = await download(server, alice, delivered["blobId"], "message.eml")
            self.assertEqual(response.code, 200)
            self.assertTrue(body.startswith(b"Return-Path: <bob@example.org>\r\n"))
            self.assertTrue(body.endswith(sent))

            stored = server.env.database.run_sync(
                lambda txn: {row[0] for row in txn.fetchall("SELECT blob_id FROM blob_data")}
            )
            self.assertEqual(stored, {blob_id, delivered["blobId"]})
            self.assertFalse(os.path.exists(blob_directory(server.env.config)))
            self.assertEqual(server.env.blobs.size(blob_id), len(raw))

        return ensureDeferred(run())


pg.add_postgresql_variants(globals(), DatabaseBlobStoreTests, DatabaseStoreServerTests)
