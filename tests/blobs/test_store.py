"""
Tests for L{jmapd.blobs.store.FileBlobStore} and the blob access table of
L{jmapd.storage.blobs}.
"""

import hashlib
import io
import os

from twisted.trial.unittest import SynchronousTestCase

from jmapd.blobs import store as store_module
from jmapd.blobs.store import FileBlobStore, blob_id_of, is_blob_id
from jmapd.storage import accounts
from jmapd.storage import blobs as blob_storage
from tests import pg
from tests.storage.test_database import make_database


class Boom(Exception):
    pass


class FileBlobStoreTests(SynchronousTestCase):
    def setUp(self):
        self.store = FileBlobStore(self.mktemp())

    def test_content_addressed(self):
        """
        A blob's id is derived from the SHA-256 of its bytes, and reading it
        back gives the same bytes.
        """
        blob_id = self.store.put(b"hello")
        self.assertEqual(blob_id, blob_id_of(b"hello"))
        self.assertTrue(is_blob_id(blob_id))
        self.assertEqual(self.store.read(blob_id), b"hello")
        self.assertEqual(self.store.size(blob_id), 5)
        self.assertTrue(self.store.exists(blob_id))

    def test_same_content_same_id(self):
        """
        Storing the same bytes twice gives the same id and one file;
        different bytes give another id.
        """
        first = self.store.put(b"same")
        second = self.store.put_file(io.BytesIO(b"same"))
        self.assertEqual(first, second)
        self.assertNotEqual(first, self.store.put(b"other"))
        self.assertEqual(os.listdir(os.path.join(self.store.root, "tmp")), [])

    def test_put_file_from_position(self):
        """
        put_file stores from the file's current position to the end, in
        chunks.
        """
        data = os.urandom(store_module._CHUNK * 2 + 7)
        source = io.BytesIO(b"skip" + data)
        source.seek(4)
        blob_id = self.store.put_file(source)
        self.assertEqual(self.store.read(blob_id), data)
        self.assertEqual(
            blob_id, store_module.blob_id_for_digest(hashlib.sha256(data).digest())
        )

    def test_fsync(self):
        """
        The file and its directory are fsynced before the id is returned.
        """
        synced = []
        real_fsync = os.fsync

        def fsync(fd):
            synced.append(fd)
            return real_fsync(fd)

        self.patch(store_module.os, "fsync", fsync)
        directories = []
        real_fsync_directory = store_module._fsync_directory

        def fsync_directory(path):
            directories.append(path)
            return real_fsync_directory(path)

        self.patch(store_module, "_fsync_directory", fsync_directory)
        blob_id = self.store.put(b"durable")
        self.assertEqual(len(synced), 2)
        self.assertEqual(directories, [os.path.dirname(self.store.path(blob_id))])

    def test_failure_removes_tmp(self):
        """
        When writing fails half-way, the temporary file is removed and no
        blob appears.
        """

        def chunks():
            yield b"part"
            raise Boom()

        self.assertRaises(Boom, self.store.put_chunks, chunks())
        self.assertEqual(os.listdir(os.path.join(self.store.root, "tmp")), [])
        self.assertFalse(self.store.exists(blob_id_of(b"part")))

    def test_delete(self):
        """
        delete removes the blob; deleting a missing blob is not an error.
        """
        blob_id = self.store.put(b"gone")
        self.store.delete(blob_id)
        self.assertFalse(self.store.exists(blob_id))
        self.store.delete(blob_id)
        self.assertRaises(FileNotFoundError, self.store.read, blob_id)

    def test_not_a_blob_id(self):
        """
        Anything but a blob id (a path, say) never names a file.
        """
        self.assertFalse(self.store.exists("../../etc/passwd"))
        self.assertRaises(ValueError, self.store.path, "../x")
        self.assertFalse(is_blob_id(blob_id_of(b"x") + "\n"))


class BlobTableTests(SynchronousTestCase):
    def setUp(self):
        self.database = make_database(self)
        self.alice = self.database.run_sync(accounts.add_account, "alice", None, write=True).id
        self.bob = self.database.run_sync(accounts.add_account, "bob", None, write=True).id

    def sync(self, fn, *args):
        return self.database.run_sync(fn, *args, write=True)

    def test_add_and_get(self):
        """
        An account sees a blob only through its own row.
        """
        record = self.sync(blob_storage.add_blob, self.alice, "b1", 10, "text/plain", 100.0, 200.0)
        self.assertEqual(self.sync(blob_storage.get_blob, self.alice, "b1"), record)
        self.assertIsNone(self.sync(blob_storage.get_blob, self.bob, "b1"))

    def test_add_extends_expiry(self):
        """
        Adding the same blob again with a later expiry extends it; an
        earlier expiry does not shorten it.
        """
        self.sync(blob_storage.add_blob, self.alice, "b1", 10, "text/plain", 100.0, 200.0)
        self.sync(blob_storage.add_blob, self.alice, "b1", 10, "text/plain", 150.0, 250.0)
        self.assertEqual(self.sync(blob_storage.get_blob, self.alice, "b1").expires_at, 250.0)
        record = self.sync(blob_storage.add_blob, self.alice, "b1", 10, "text/plain", 160.0, 180.0)
        self.assertEqual(record.expires_at, 250.0)
        self.assertEqual(self.sync(blob_storage.get_blob, self.alice, "b1").expires_at, 250.0)

    def test_keep_makes_permanent(self):
        """
        keep_blob makes the row permanent: adding it again as an upload
        does not make it expire, and expiry leaves it.
        """
        self.sync(blob_storage.add_blob, self.alice, "b1", 10, "text/plain", 100.0, 200.0)
        self.sync(blob_storage.keep_blob, self.alice, "b1")
        record = self.sync(blob_storage.add_blob, self.alice, "b1", 10, "text/plain", 300.0, 400.0)
        self.assertIsNone(record.expires_at)
        self.assertEqual(self.sync(blob_storage.expire_blobs, 1000.0), [])
        self.assertIsNone(self.sync(blob_storage.get_blob, self.alice, "b1").expires_at)

    def test_expire(self):
        """
        expire_blobs drops expired rows and returns only the blob ids no
        other row still refers to.
        """
        self.sync(blob_storage.add_blob, self.alice, "shared", 1, "t", 0.0, 100.0)
        self.sync(blob_storage.add_blob, self.bob, "shared", 1, "t", 0.0, None)
        self.sync(blob_storage.add_blob, self.alice, "alone", 1, "t", 0.0, 100.0)
        self.sync(blob_storage.add_blob, self.alice, "later", 1, "t", 0.0, 500.0)
        self.assertEqual(self.sync(blob_storage.expire_blobs, 99.0), [])
        self.assertEqual(self.sync(blob_storage.expire_blobs, 100.0), ["alone"])
        self.assertIsNone(self.sync(blob_storage.get_blob, self.alice, "shared"))
        self.assertIsNotNone(self.sync(blob_storage.get_blob, self.bob, "shared"))
        self.assertIsNotNone(self.sync(blob_storage.get_blob, self.alice, "later"))

    def test_expire_both_rows(self):
        """
        A blob whose every row expires at once is returned once.
        """
        self.sync(blob_storage.add_blob, self.alice, "b", 1, "t", 0.0, 10.0)
        self.sync(blob_storage.add_blob, self.bob, "b", 1, "t", 0.0, 20.0)
        self.assertEqual(self.sync(blob_storage.expire_blobs, 30.0), ["b"])


# The same tests on PostgreSQL (see tests/pg.py).
pg.add_postgresql_variants(globals(), BlobTableTests)
