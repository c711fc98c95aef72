# -*- test-case-name: tests.blobs.test_writeback -*-
"""
The file store, with delivered messages staged in the database first
(C{blob-store: files}).

Mail delivery makes a group of messages durable with one commit
(L{jmapd.ingest.delivery}).  Written straight to files, each message's
bytes also needed their file created (and, in a new store, its fan-out
directory) and the group a flush of the file system before that commit: a
second flush per group, about 3 ms of the 16 ms a group of four took on
the machine measured, and the kernel's work of creating the files in the
delivery thread.

Instead, delivery writes the bytes into the filing transaction
(L{WriteBackBlobStore.write_in}: rows of the staging tables C{blob_data}
and C{blob_chunks}, as the database store keeps all its blobs), so the
commit's one flush makes messages and bytes durable together.  A job in
the worker pool (L{WriteBackBlobStore.move}, every L{MOVE_INTERVAL}
seconds, started by L{jmapd.service.JMAPService}) then writes the staged
blobs to their files, makes them durable with one flush for the whole
batch, and only then deletes their rows.  A crash at any point leaves each
blob in one place or both, never in none: a blob moved twice is written
once (the file store keeps what is there when its content matches).

Everything else (uploads, imports, Email/set) writes files, as before.
Readers look among the staged rows first, then in the files: while a blob
has rows they are what it holds (a crash during a move can leave its file
incomplete until the move is done again, which replaces it), and a blob
whose rows are gone has a durable file (the move flushed it before
deleting them).  A staged blob is read into memory whole; delivered
messages are at most C{mail-max-size}.

On PostgreSQL with the file store the staging rows are in PostgreSQL; any
node may move any of them, and two moving one blob at once both write the
same file.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterable, Sequence
from typing import Any, BinaryIO, TypeVar

from jmapd.blobs.database import DatabaseBlobStore
from jmapd.blobs.store import FileBlobStore, Written

#: Seconds between two runs of the move job (it runs again at once while
#: it finds full batches).
MOVE_INTERVAL = 1.0

#: Most blobs one batch of the move job reads, writes and flushes.
MOVE_BATCH = 500

_T = TypeVar("_T")


class WriteBackBlobStore:
    """
    Blob files (L{FileBlobStore}) with a staging area in the database (a
    L{DatabaseBlobStore}); see the module docstring.

    @ivar files: the file store.
    @ivar staged: the staging store.
    """

    def __init__(self, files: FileBlobStore, staged: DatabaseBlobStore) -> None:
        self.files = files
        self.staged = staged

    def close(self) -> None:
        self.staged.close()

    # -- where delivery writes ----------------------------------------------------------

    def write_in(self, txn: Any, data: bytes) -> str:
        """
        Stage C{data} in the caller's write transaction C{txn}: durable
        when C{txn} commits, gone if it rolls back, moved to its file
        later.  Returns its blob id.
        """
        return self.staged.write_in(txn, data)

    # -- reading ------------------------------------------------------------------------

    @staticmethod
    def _find(in_staged: Callable[[], _T], in_files: Callable[[], _T]) -> _T:
        """
        C{in_staged()}, or if the blob has no staged rows, C{in_files()}.
        """
        try:
            return in_staged()
        except FileNotFoundError:
            return in_files()

    def exists(self, blob_id: str) -> bool:
        return self.staged.exists(blob_id) or self.files.exists(blob_id)

    def size(self, blob_id: str) -> int:
        return self._find(lambda: self.staged.size(blob_id), lambda: self.files.size(blob_id))

    def read(self, blob_id: str) -> bytes:
        return self._find(lambda: self.staged.read(blob_id), lambda: self.files.read(blob_id))

    def open(self, blob_id: str) -> BinaryIO:
        """
        A file object for the blob (a staged one is read whole).

        @raise FileNotFoundError: no such blob.
        """

        def staged() -> BinaryIO:
            return io.BytesIO(self.staged.read(blob_id))

        return self._find(staged, lambda: self.files.open(blob_id))

    # -- everything else writes files ---------------------------------------------------

    def put(self, data: bytes) -> str:
        return self.files.put(data)

    def put_many(self, items: Sequence[bytes]) -> list[str]:
        return self.files.put_many(items)

    def write(self, data: bytes) -> Written:
        return self.files.write(data)

    def sync(self, written: Iterable[Written]) -> None:
        self.files.sync(written)

    def put_file(self, source: BinaryIO) -> str:
        return self.files.put_file(source)

    def put_chunks(self, chunks: Iterable[bytes]) -> str:
        return self.files.put_chunks(chunks)

    def delete(self, blob_id: str) -> None:
        """
        Remove the blob from both places (in the calling thread's open
        transaction, if any, for the staged rows).
        """
        self.staged.delete(blob_id)
        self.files.delete(blob_id)

    def remove_leftovers(self, before: float) -> int:
        """
        See L{FileBlobStore.remove_leftovers}: staged blobs have no
        temporary files.
        """
        return self.files.remove_leftovers(before)

    # -- moving -------------------------------------------------------------------------

    def move(self, batch: int = MOVE_BATCH) -> int:
        """
        Move staged blobs to their files, C{batch} at a time, until fewer
        than a batch are left; return how many were moved.  A blocking
        call for a worker thread.
        """
        moved = 0
        while True:
            count = self._move_batch(batch)
            moved += count
            if count < batch:
                return moved

    def _move_batch(self, batch: int) -> int:
        database = self.staged.database

        def staged_ids(txn: Any) -> list[str]:
            return [row[0] for row in txn.fetchall("SELECT blob_id FROM blob_data LIMIT ?", (batch,))]

        blob_ids = database.run_sync(staged_ids, write=False)
        if not blob_ids:
            return 0
        written: list[Written] = []
        for blob_id in blob_ids:
            try:
                data = self.staged.read(blob_id)
            except FileNotFoundError:
                # Deleted meanwhile (expired, or moved by another node).
                continue
            written.append(self.files.write(data))
        self.files.sync(written)

        def unstage(txn: Any) -> None:
            # In id order, as housekeeping deletes (expire_blobs): two
            # transactions deleting the same rows wait, never deadlock.
            for blob_id in sorted({item.blob_id for item in written}):
                self.staged.delete_in(txn, blob_id)

        database.run_sync(unstage, write=True)
        return len(blob_ids)
