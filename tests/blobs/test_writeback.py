"""
Tests for L{jmapd.blobs.writeback.WriteBackBlobStore}: delivered messages
staged in the database, moved to files later, readable throughout, never
in neither place.

These run on SQLite (the staging store shares the metadata database) and,
as the C{...OnPostgreSQL} variants, on PostgreSQL.
"""

from __future__ import annotations

import errno
import os
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import ensureDeferred
from twisted.internet.task import deferLater
from twisted.trial.unittest import SynchronousTestCase

from jmapd.blobs.database import DatabaseBlobStore, open_blob_store
from jmapd.blobs.store import FileBlobStore, blob_id_of
from jmapd.blobs.writeback import MOVE_INTERVAL, WriteBackBlobStore
from jmapd.config import default_config
from jmapd.storage import blob_directory
from jmapd.storage.database import Database
from tests import pg
from tests.ingest.support import LMTPTestCase, message
from tests.web.test_blobs import download


class WriteBackTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.database = Database(pg.make_engine(self))
        self.database.migrate()
        self.addCleanup(self.database.close)
        self.files = FileBlobStore(os.path.abspath(self.mktemp()))
        # As open_blob_store makes it: sharing the metadata's database.
        self.store = WriteBackBlobStore(self.files, DatabaseBlobStore(self.database, shared=True))

    def stage(self, *items: bytes) -> list[str]:
        """
        Stage C{items} as delivery does: in a write transaction.
        """
        return list(self.database.run_sync(lambda txn: [self.store.write_in(txn, data) for data in items], write=True))

    def staged_ids(self) -> set[str]:
        return set(self.database.run_sync(lambda txn: [row[0] for row in txn.fetchall("SELECT blob_id FROM blob_data")]))

    def test_stagedInTransaction(self) -> None:
        """
        A blob written in a transaction is staged when it commits
        (readable whole, by stream, by size; no file yet) and absent when
        it rolls back.
        """
        (blob_id,) = self.stage(b"delivered")
        self.assertEqual(blob_id, blob_id_of(b"delivered"))
        self.assertFalse(self.files.exists(blob_id))
        self.assertTrue(self.store.exists(blob_id))
        self.assertEqual(self.store.read(blob_id), b"delivered")
        with self.store.open(blob_id) as f:
            self.assertEqual(f.read(), b"delivered")
        self.assertEqual(self.store.size(blob_id), len(b"delivered"))

        class Abort(Exception):
            pass

        def abort(txn: Any) -> None:
            self.store.write_in(txn, b"rolled back")
            raise Abort()

        self.assertRaises(Abort, self.database.run_sync, abort, write=True)
        self.assertFalse(self.store.exists(blob_id_of(b"rolled back")))
        self.assertRaises(FileNotFoundError, self.store.read, blob_id_of(b"rolled back"))

    def test_move(self) -> None:
        """
        L{WriteBackBlobStore.move} writes every staged blob to its file,
        then removes its rows, in batches until none is left; the blobs
        read the same before and after.
        """
        items = [b"message %d" % n for n in range(5)]
        blob_ids = self.stage(*items)
        synced: list[int] = []
        real_sync = self.files.sync

        def sync(written: Any) -> None:
            written = list(written)
            synced.append(len(written))
            real_sync(written)

        self.patch(self.files, "sync", sync)
        self.assertEqual(self.store.move(batch=2), 5)
        self.assertEqual(synced, [2, 2, 1])
        self.assertEqual(self.staged_ids(), set())
        for blob_id, data in zip(blob_ids, items, strict=True):
            with open(self.files.path(blob_id), "rb") as f:
                self.assertEqual(f.read(), data)
            self.assertEqual(self.store.read(blob_id), data)
        self.assertEqual(self.store.move(), 0)

    def test_flushFails(self) -> None:
        """
        When the moved files cannot be made durable, the blobs stay staged
        (and readable); a later move moves them.
        """
        (blob_id,) = self.stage(b"kept")
        real_sync = self.files.sync

        def sync(written: Any) -> None:
            raise OSError(errno.EIO, "Input/output error")

        self.patch(self.files, "sync", sync)
        self.assertRaises(OSError, self.store.move)
        self.assertEqual(self.staged_ids(), {blob_id})
        self.assertEqual(self.store.read(blob_id), b"kept")
        self.patch(self.files, "sync", real_sync)
        self.assertEqual(self.store.move(), 1)
        self.assertEqual(self.staged_ids(), set())
        self.assertEqual(self.store.read(blob_id), b"kept")

    def test_incompleteFileNotServed(self) -> None:
        """
        A file a crash left incomplete during a move (written, not yet
        flushed, its rows still there) is not what readers get: while the
        rows exist they are read; the next move replaces the file, and
        then the file is read.
        """
        (blob_id,) = self.stage(b"the whole message")
        path = self.files.path(blob_id)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(b"the who")
        self.assertEqual(self.store.read(blob_id), b"the whole message")
        with self.store.open(blob_id) as f:
            self.assertEqual(f.read(), b"the whole message")
        self.assertEqual(self.store.size(blob_id), len(b"the whole message"))
        self.assertEqual(self.store.move(), 1)
        with open(path, "rb") as f:
            self.assertEqual(f.read(), b"the whole message")
        self.assertEqual(self.staged_ids(), set())
        self.assertEqual(self.store.read(blob_id), b"the whole message")

    def test_stagedAgainWhileFiled(self) -> None:
        """
        The same bytes delivered again after they were moved are staged
        again and moved again without harm: one file, no rows left.
        """
        (blob_id,) = self.stage(b"twice")
        self.store.move()
        self.stage(b"twice")
        self.assertEqual(self.staged_ids(), {blob_id})
        self.assertEqual(self.store.move(), 1)
        self.assertEqual(self.staged_ids(), set())
        self.assertEqual(self.store.read(blob_id), b"twice")

    def test_delete(self) -> None:
        """
        Deleting a blob removes it from both places.
        """
        (blob_id,) = self.stage(b"both")
        self.files.put(b"both")
        self.store.delete(blob_id)
        self.assertFalse(self.store.exists(blob_id))
        self.assertFalse(self.files.exists(blob_id))
        self.assertEqual(self.staged_ids(), set())
        self.assertRaises(FileNotFoundError, self.store.open, blob_id)

    def test_uploadsAreFiles(self) -> None:
        """
        Blobs stored other than by delivery (uploads, imports) go to
        files at once, never through the staging rows.
        """
        blob_id = self.store.put(b"uploaded")
        streamed = self.store.put_chunks([b"stream", b"ed"])
        self.assertTrue(self.files.exists(blob_id))
        self.assertTrue(self.files.exists(streamed))
        self.assertEqual(self.staged_ids(), set())

    def test_unknown(self) -> None:
        """
        A blob in neither place does not exist and cannot be read.
        """
        missing = blob_id_of(b"never stored")
        self.assertFalse(self.store.exists(missing))
        self.assertRaises(FileNotFoundError, self.store.read, missing)
        self.assertRaises(FileNotFoundError, self.store.open, missing)
        self.assertRaises(FileNotFoundError, self.store.size, missing)


class OpenWriteBackTests(SynchronousTestCase):
    def test_files(self) -> None:
        """
        blob-store files opens a write-back store: files under db-path
        (the directory created), staging in the metadata database (its
        own connections for a caller that gives none).
        """
        config = default_config(db_path=os.path.abspath(self.mktemp()))
        store = open_blob_store(config)
        self.addCleanup(store.close)
        self.assertIsInstance(store, WriteBackBlobStore)
        self.assertEqual(store.files.root, blob_directory(config))
        self.assertTrue(os.path.isdir(blob_directory(config)))


class WriteBackServerTests(LMTPTestCase):
    """
    A server with the default blob store, end to end (on SQLite, and on
    PostgreSQL in the variant).
    """

    def test_deliveredThenMoved(self) -> None:
        """
        A message delivered over LMTP is staged (no file), downloads as
        delivered, and once the service's move job has run it is a file
        and no longer staged, and still downloads the same.
        """

        async def run() -> None:
            server, _, port = await self.start_lmtp()
            store = server.env.blobs
            self.assertIsInstance(store, WriteBackBlobStore)
            # No connections of its own (on PostgreSQL, none beyond db-pool-size).
            self.assertIs(store.staged.database, server.env.database)
            alice = server.add_account("alice", ("alice@example.com",))
            sent = message(subject="Staged", body="Moved later.")
            # The service's own move job must not run before the test says.
            real_move = server.service.move_blobs
            self.patch(server.service, "move_blobs", lambda: None)

            def deliver() -> None:
                client = self.connect(port)
                client.sendmail("bob@example.org", ["alice@example.com"], sent)
                client.quit()

            await self.in_thread(deliver)
            blob_id = server.env.database.run_sync(lambda txn: txn.fetchvalue("SELECT blob_id FROM emails"))
            self.assertFalse(store.files.exists(blob_id))
            response, body = await download(server, alice, blob_id, "message.eml")
            self.assertEqual(response.code, 200)
            self.assertTrue(body.endswith(sent))

            await real_move()
            self.assertTrue(store.files.exists(blob_id))
            staged = server.env.database.run_sync(lambda txn: txn.fetchvalue("SELECT count(*) FROM blob_data"))
            self.assertEqual(staged, 0)
            response, moved = await download(server, alice, blob_id, "message.eml")
            self.assertEqual((response.code, moved), (200, body))

        return ensureDeferred(run())


    def test_movedByTheService(self) -> None:
        """
        The service moves staged messages to their files by itself, every
        MOVE_INTERVAL seconds, without anyone asking.
        """

        async def run() -> None:
            server, _, port = await self.start_lmtp()
            server.add_account("alice", ("alice@example.com",))

            def deliver() -> None:
                client = self.connect(port)
                client.sendmail("bob@example.org", ["alice@example.com"], message(subject="By itself"))
                client.quit()

            await self.in_thread(deliver)
            blob_id = server.env.database.run_sync(lambda txn: txn.fetchvalue("SELECT blob_id FROM emails"))

            def staged() -> int:
                return int(server.env.database.run_sync(lambda txn: txn.fetchvalue("SELECT count(*) FROM blob_data")))

            # The file is flushed, then the rows go, in the next transaction.
            for _ in range(int(10 * MOVE_INTERVAL / 0.05)):
                if staged() == 0:
                    break
                await deferLater(reactor, 0.05, lambda: None)
            self.assertEqual(staged(), 0)
            self.assertTrue(server.env.blobs.files.exists(blob_id))

        return ensureDeferred(run())


pg.add_postgresql_variants(globals(), WriteBackTests, WriteBackServerTests)
