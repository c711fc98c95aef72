"""
Tests for L{jmapd.blobs.store.FileBlobStore} and the blob access table of
L{jmapd.storage.blobs}.
"""

import errno
import hashlib
import io
import os

from twisted.trial.unittest import SkipTest, SynchronousTestCase

from jmapd.blobs import store as store_module
from jmapd.blobs.store import FileBlobStore, blob_id_of, is_blob_id
from jmapd.storage import accounts
from jmapd.storage import blobs as blob_storage
from tests import pg
from tests.storage.test_database import make_database


class Boom(Exception):
    pass


class ContentAddressedTests:
    """
    What every blob store does (mixed into each store's tests, whose
    C{setUp} makes C{self.store}).
    """

    def test_content_addressed(self):
        """
        A blob's id is derived from the SHA-256 of its bytes (the same id
        in every store), and reading it back gives the same bytes.
        """
        blob_id = self.store.put(b"hello")
        self.assertEqual(blob_id, blob_id_of(b"hello"))
        self.assertTrue(is_blob_id(blob_id))
        self.assertEqual(self.store.read(blob_id), b"hello")
        self.assertEqual(self.store.size(blob_id), 5)
        self.assertTrue(self.store.exists(blob_id))


class FileBlobStoreTests(ContentAddressedTests, SynchronousTestCase):
    def setUp(self):
        self.store = FileBlobStore(self.mktemp())

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

    def record_fsyncs(self):
        """
        Record every fsync of the store, by path, instead of doing it.
        """
        synced = []
        self.patch(store_module, "_fsync", synced.append)
        return synced

    def record_syncfs(self):
        """
        Record every syncfs of the store (the path of the descriptor it
        was given) instead of doing it.
        """
        flushed = []
        self.patch(store_module, "_syncfs", lambda fd: flushed.append(os.readlink(f"/proc/self/fd/{fd}")))
        return flushed

    def test_fsync(self):
        """
        Without syncfs, the file, its directory and (the first time, as
        they may be new) the directories above it are fsynced before the
        id is returned; a later blob in the same directory needs only the
        file and that directory.
        """
        self.patch(store_module, "_syncfs", None)
        synced = self.record_fsyncs()
        blob_id = self.store.put(b"durable")
        path = self.store.path(blob_id)
        directory = os.path.dirname(path)
        self.assertEqual(
            synced, [path, directory, os.path.dirname(directory), os.path.dirname(os.path.dirname(directory))]
        )
        # Known durable now: another blob there needs only the directory.
        self.assertEqual(self.store._directories_for(directory), (directory,))

    def test_syncGroup(self):
        """
        Without syncfs, a group is made durable with one fsync per file
        and one per directory, however many of the group's blobs are in it.
        """
        self.patch(store_module, "_syncfs", None)
        synced = self.record_fsyncs()
        written = [self.store.write(data) for data in (b"one", b"two", b"three")]
        self.assertEqual(synced, [])
        self.store.sync(written)
        files = [w.path for w in written]
        self.assertEqual(synced[:3], files)
        directories = synced[3:]
        self.assertEqual(len(directories), len(set(directories)))
        self.assertEqual(set(directories), {d for w in written for d in w.directories})
        self.assertIn(self.store.root, directories)

    def test_syncfs(self):
        """
        With syncfs, a group is made durable with one call for the store's
        file system, and nothing is fsynced one by one.
        """
        synced = self.record_fsyncs()
        flushed = self.record_syncfs()
        written = [self.store.write(data) for data in (b"one", b"two", b"three")]
        self.assertEqual(flushed, [])
        self.store.sync(written)
        self.assertEqual(flushed, [os.path.realpath(self.store.root)])
        self.assertEqual(synced, [])
        self.store.sync([])
        self.assertEqual(len(flushed), 1)

    def test_syncfsError(self):
        """
        An error syncfs reports reaches the caller of sync.
        """
        real = store_module._load_syncfs()
        if real is None:
            raise SkipTest("no syncfs on this platform")
        written = self.store.write(b"data")
        # A descriptor that is not open: syncfs fails with EBADF.
        self.patch(os, "open", lambda *args: 1 << 20)
        self.patch(os, "close", lambda fd: None)
        self.patch(store_module, "_syncfs", real)
        error = self.assertRaises(OSError, self.store.sync, [written])
        self.assertEqual(error.errno, errno.EBADF)

    def test_writeThenRead(self):
        """
        A written blob can be read at once, before it is synced, and
        put_many stores several, returning their ids in order.
        """
        written = self.store.write(b"early")
        self.assertEqual(written.blob_id, blob_id_of(b"early"))
        self.assertEqual(self.store.read(written.blob_id), b"early")
        self.assertEqual(self.store.put_many([b"a", b"b"]), [blob_id_of(b"a"), blob_id_of(b"b")])
        self.assertEqual(os.listdir(os.path.join(self.store.root, "tmp")), [])

    def test_incompleteReplaced(self):
        """
        A file a crash left incomplete under a blob's name is replaced by
        the next write or put of that content, not taken as the blob.
        """
        for store_data in (self.store.write, self.store.put, lambda data: self.store.put_file(io.BytesIO(data))):
            data = os.urandom(100)
            path = self.store.path(blob_id_of(data))
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "wb") as f:
                f.write(data[:10])
            store_data(data)
            self.assertEqual(self.store.read(blob_id_of(data)), data)

    def test_existingKept(self):
        """
        Writing content that is already stored keeps the file as it is
        (same inode) and still syncs it.
        """
        self.patch(store_module, "_syncfs", None)
        blob_id = self.store.put(b"kept")
        before = os.stat(self.store.path(blob_id)).st_ino
        synced = self.record_fsyncs()
        written = self.store.write(b"kept")
        self.assertEqual(os.stat(self.store.path(blob_id)).st_ino, before)
        self.store.sync([written])
        self.assertIn(self.store.path(blob_id), synced)

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

    def test_leftoversRemoved(self):
        """
        remove_leftovers removes the temporary files a crash left behind
        (dot-named beside the blobs, any file in tmp/) that were last
        changed before the given time, and nothing else: not newer ones (a
        write going on, here or on another node), and no blob.
        """
        kept = self.store.put(b"a blob")
        directory = os.path.dirname(self.store.path(kept))
        old_beside = os.path.join(directory, f".{kept}.1234.5678.0")
        new_beside = os.path.join(directory, f".{kept}.1234.5678.1")
        old_upload = os.path.join(self.store.root, "tmp", "tmpabcdef")
        new_upload = os.path.join(self.store.root, "tmp", "tmpghijkl")
        for path in (old_beside, new_beside, old_upload, new_upload):
            with open(path, "wb") as f:
                f.write(b"half a blob")
        for path in (old_beside, old_upload, self.store.path(kept)):
            os.utime(path, (1000.0, 1000.0))

        self.assertEqual(self.store.remove_leftovers(2000.0), 2)

        self.assertFalse(os.path.exists(old_beside))
        self.assertFalse(os.path.exists(old_upload))
        self.assertTrue(os.path.exists(new_beside))
        self.assertTrue(os.path.exists(new_upload))
        self.assertEqual(self.store.read(kept), b"a blob")
        self.assertEqual(self.store.remove_leftovers(2000.0), 0)

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
