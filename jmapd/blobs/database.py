# -*- test-case-name: tests.blobs.test_database_store -*-
"""
Content-addressed blobs in the database (C{blob-store: database}).

With the default store, blobs are files under db-path, which several
nodes can only share through a shared file system.  This store keeps them
in the metadata database itself (tables C{blob_data} and C{blob_chunks},
migration 0010): in PostgreSQL, so that nodes share nothing but the
database, or in the SQLite database file under db-path.  It has the
interface of L{jmapd.blobs.store.FileBlobStore} and the same blob ids, so
the rest of jmapd does not know which store it has.

On PostgreSQL, every C{put} returns once its own transaction has
committed: an acknowledged blob survives a crash, as a fsynced file does.
The store's transactions run on connections of their own (a L{Database}
separate from the one for metadata), so that a blob stored this way is
durable whether or not the caller's metadata transaction commits.

On SQLite the database has one writer at a time, and jmapd stores and
removes blobs while it holds a metadata write transaction (an upload, an
Email/import, expiry): a transaction of the store's own would wait for
that one, which waits for it.  There the store shares the metadata's
L{Database} instead (C{open_blob_store(config, database)}), and its work
joins the transaction the calling thread has open, in a savepoint, or
runs in one of its own when there is none: a blob stored in a
transaction is durable when that transaction commits, and gone if it
rolls back, as are the rows that refer to it.

A caller that wants the blob durable exactly when its own rows are, on
either engine, stores it with L{DatabaseBlobStore.write_in} inside its
own write transaction: mail delivery does, so that one commit (on
SQLite, one flush of its log) makes a group of messages and their bytes
durable together.

Content is cut into rows of at most L{CHUNK_SIZE} bytes, so a large blob
is never one value in memory: L{open} returns a file object that fetches
one row at a time.  These are blocking calls for worker threads.
"""

from __future__ import annotations

import errno
import hashlib
import io
import os
import secrets
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, BinaryIO, cast

from attrs import frozen

from jmapd.blobs.store import FileBlobStore, blob_id_for_digest, blob_id_of, is_blob_id
from jmapd.storage import blob_directory
from jmapd.storage.database import Database, Transaction
from jmapd.storage.engines import engine_from_config

#: The largest row of C{blob_chunks}: what one read holds in memory.
CHUNK_SIZE = 1 << 20

#: How much of a source L{DatabaseBlobStore.put_file} reads at a time.
_READ = 1 << 16


def _missing(blob_id: str) -> FileNotFoundError:
    """
    The error for a blob that is not stored: the one the file store raises,
    so callers handle both stores alike.
    """
    return FileNotFoundError(errno.ENOENT, "no such blob", blob_id)


@frozen
class PendingBlob:
    """
    A blob L{DatabaseBlobStore.write} accepted and L{DatabaseBlobStore.sync}
    has yet to store (the counterpart of the file store's C{Written}).
    """

    blob_id: str
    data: bytes


def _pieces(data: bytes, size: int) -> Iterator[bytes]:
    view = memoryview(data)
    for start in range(0, len(data), size):
        yield bytes(view[start : start + size])


class DatabaseBlobStore:
    """
    Blobs as rows of C{blob_data} (one per blob: its size) and
    C{blob_chunks} (its content, in order).

    @param database: a L{jmapd.storage.database.Database} used for blobs
        only (see the module docstring), migrated to schema 0010 or later;
        or, with C{shared}, the SQLite metadata's own.
    @param chunk_size: the largest row (tests make it small).
    @param shared: C{database} is the metadata's (SQLite): work joins the
        transaction the calling thread has open on it, if any.
    """

    def __init__(self, database: Database, chunk_size: int = CHUNK_SIZE, shared: bool = False) -> None:
        self.database = database
        self.chunk_size = chunk_size
        self.shared = shared

    def close(self) -> None:
        """
        Close the store's connections (when the service stops); a shared
        database is closed by its owner.
        """
        if not self.shared:
            self.database.close()

    def _open_transaction(self) -> Transaction | None:
        """
        The transaction the calling thread has open on a shared database,
        or C{None}.
        """
        if not self.shared:
            return None
        return self.database.current_transaction()

    def _read(self, fn: Any, *args: Any) -> Any:
        txn = self._open_transaction()
        if txn is None:
            return self.database.run_sync(fn, *args, write=False)
        return fn(txn, *args)

    def _write(self, fn: Any, *args: Any) -> Any:
        txn = self._open_transaction()
        if txn is None:
            return self.database.run_sync(fn, *args, write=True)
        with txn.savepoint():
            return fn(txn, *args)

    def exists(self, blob_id: str) -> bool:
        if not is_blob_id(blob_id):
            return False
        return self._header(blob_id) is not None

    def _header(self, blob_id: str) -> tuple[int, int] | None:
        """
        The size and number of chunks of a stored blob, or None.
        """

        def header(txn: Any) -> Any:
            return txn.fetchone("SELECT size, chunks FROM blob_data WHERE blob_id = ?", (blob_id,))

        row = self._read(header)
        return None if row is None else (int(row[0]), int(row[1]))

    def size(self, blob_id: str) -> int:
        header = self._header(blob_id) if is_blob_id(blob_id) else None
        if header is None:
            raise _missing(blob_id)
        return header[0]

    def put(self, data: bytes) -> str:
        """
        Store C{data}; return its blob id once it is durable.
        """
        return self.put_many([data])[0]

    def put_many(self, items: Sequence[bytes]) -> list[str]:
        """
        Store each of C{items} in one transaction; return their blob ids,
        in order, once it has committed.
        """
        pending = [self.write(data) for data in items]
        self.sync(pending)
        return [p.blob_id for p in pending]

    def write(self, data: bytes) -> PendingBlob:
        """
        Accept C{data} to be stored by L{sync} (with others, in one
        transaction: the group commit of mail delivery).  Unlike a file
        written by the file store, the blob cannot be read before then;
        no caller reads a blob it has not synced.
        """
        return PendingBlob(blob_id_of(data), data)

    def sync(self, written: Iterable[PendingBlob]) -> None:
        """
        Store written blobs, all in one transaction.
        """
        # By id, each once: two transactions storing the same blobs then
        # wait for each other in one order, never in a deadlock.
        unique = {p.blob_id: p for p in written}
        if not unique:
            return

        def store(txn: Any) -> None:
            for blob_id in sorted(unique):
                self._store(txn, blob_id, unique[blob_id].data)

        self._write(store)

    def write_in(self, txn: Any, data: bytes) -> str:
        """
        Store C{data} in the caller's write transaction C{txn} (on the
        database this store keeps its blobs in) and return its blob id.

        The blob is then durable when C{txn} commits, together with the
        rows that refer to it, and gone if C{txn} (or the savepoint it is
        written in) rolls back: it costs no commit of its own.
        """
        blob_id = blob_id_of(data)
        self._store(txn, blob_id, data)
        return blob_id

    def _store(self, txn: Any, blob_id: str, data: bytes) -> None:
        pieces = list(_pieces(data, self.chunk_size))
        if not self._claim(txn, blob_id, len(data), len(pieces)):
            return
        txn.executemany(
            "INSERT INTO blob_chunks (blob_id, seq, data) VALUES (?, ?, ?)",
            [(blob_id, seq, piece) for seq, piece in enumerate(pieces)],
        )

    @staticmethod
    def _claim(txn: Any, blob_id: str, size: int, chunks: int) -> bool:
        """
        Insert the blob's C{blob_data} row unless the blob is stored (or
        being stored by a transaction this one then waits for); return
        whether this transaction is the one to store its chunks.
        """
        txn.execute(
            f"INSERT INTO blob_data (blob_id, size, chunks) VALUES (?, ?, ?) {txn.engine.upsert_ignore()}",
            (blob_id, size, chunks),
        )
        return txn.rowcount == 1

    def put_file(self, source: BinaryIO) -> str:
        """
        Store what C{source} holds from its current position to the end.
        """
        return self.put_chunks(iter(lambda: source.read(_READ), b""))

    def put_chunks(self, chunks: Iterable[bytes]) -> str:
        """
        Store the concatenation of C{chunks}, read once, holding at most
        one row's worth in memory: the rows are written under a temporary
        key and given the blob id, once the hash is known, in the same
        transaction.
        """
        attempts: list[None] = []

        def store(txn: Any) -> str:
            # A transaction run again (after a deadlock) could not read
            # the chunks again; none of these statements can deadlock.
            attempts.append(None)
            if len(attempts) > 1:
                raise RuntimeError("a streamed blob cannot be stored again")
            key = "tmp-" + secrets.token_hex(16)
            digest = hashlib.sha256()
            size = 0
            seq = 0
            buffer = bytearray()

            def flush(piece: bytes) -> None:
                nonlocal seq
                txn.execute("INSERT INTO blob_chunks (blob_id, seq, data) VALUES (?, ?, ?)", (key, seq, piece))
                seq += 1

            for chunk in chunks:
                digest.update(chunk)
                size += len(chunk)
                buffer += chunk
                while len(buffer) >= self.chunk_size:
                    flush(bytes(buffer[: self.chunk_size]))
                    del buffer[: self.chunk_size]
            if buffer:
                flush(bytes(buffer))
            blob_id = blob_id_for_digest(digest.digest())
            if self._claim(txn, blob_id, size, seq):
                txn.execute("UPDATE blob_chunks SET blob_id = ? WHERE blob_id = ?", (blob_id, key))
            else:
                txn.execute("DELETE FROM blob_chunks WHERE blob_id = ?", (key,))
            return blob_id

        return cast(str, self._write(store))

    def open(self, blob_id: str) -> BinaryIO:
        """
        A file object reading the blob one row at a time, each in a short
        transaction of its own (a slow download holds none open).

        @raise FileNotFoundError: no such blob.
        """
        header = self._header(blob_id) if is_blob_id(blob_id) else None
        if header is None:
            raise _missing(blob_id)
        raw = _ChunkReader(self, blob_id, header[1])
        return cast(BinaryIO, io.BufferedReader(raw))

    def _chunk(self, blob_id: str, seq: int) -> bytes:
        def chunk(txn: Any) -> Any:
            return txn.fetchvalue("SELECT data FROM blob_chunks WHERE blob_id = ? AND seq = ?", (blob_id, seq))

        data = self._read(chunk)
        if data is None:
            # Deleted while being read.
            raise _missing(blob_id)
        return bytes(data)

    def read(self, blob_id: str) -> bytes:
        """
        The whole blob, in one transaction.

        @raise FileNotFoundError: no such blob.
        """
        if not is_blob_id(blob_id):
            raise _missing(blob_id)

        def read(txn: Any) -> bytes | None:
            if txn.fetchone("SELECT 1 FROM blob_data WHERE blob_id = ?", (blob_id,)) is None:
                return None
            rows = txn.fetchall("SELECT data FROM blob_chunks WHERE blob_id = ? ORDER BY seq", (blob_id,))
            return b"".join(bytes(row[0]) for row in rows)

        data = self._read(read)
        if data is None:
            raise _missing(blob_id)
        return cast(bytes, data)

    def delete(self, blob_id: str) -> None:
        """
        Remove the blob; removing one that is not stored is not an error.
        """
        if is_blob_id(blob_id):
            self._write(self.delete_in, blob_id)

    def delete_in(self, txn: Any, blob_id: str) -> None:
        """
        Remove the blob in the caller's write transaction C{txn} (see
        L{write_in}); removing one that is not stored is not an error.
        """
        txn.execute("DELETE FROM blob_data WHERE blob_id = ?", (blob_id,))
        txn.execute("DELETE FROM blob_chunks WHERE blob_id = ?", (blob_id,))


class _ChunkReader(io.RawIOBase):
    """
    The raw stream under L{DatabaseBlobStore.open}: each C{readinto}
    returns (part of) one row, fetched when it is reached.  Closing it
    costs nothing, so it may be closed on the reactor thread.
    """

    def __init__(self, store: DatabaseBlobStore, blob_id: str, chunks: int) -> None:
        super().__init__()
        self._store = store
        self._blob_id = blob_id
        self._chunks = chunks
        self._seq = 0
        self._current = memoryview(b"")

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        if not self._current:
            if self._seq >= self._chunks:
                return 0
            self._current = memoryview(self._store._chunk(self._blob_id, self._seq))
            self._seq += 1
        count = min(len(buffer), len(self._current))
        buffer[:count] = self._current[:count]
        self._current = self._current[count:]
        return count


def open_blob_store(config: Any, database: Database | None = None) -> Any:
    """
    The blob store the configuration names (C{blob-store}): for
    C{database}, this store in the metadata database: on SQLite, sharing
    C{database}, the metadata's (see the module docstring); on PostgreSQL
    of C{db-url}, or on SQLite when C{database} is not given (a caller
    that never holds a transaction while it stores blobs), on connections
    of its own (as many as the metadata's: C{db-pool-size}), migrated.
    For C{files}, files under db-path with delivered messages staged in
    the metadata database first
    (L{jmapd.blobs.writeback.WriteBackBlobStore}): staged rows are only
    written in the caller's transactions and by the move job, so on
    either engine they share C{database} when it is given.
    """
    from jmapd.blobs.writeback import WriteBackBlobStore

    def own() -> DatabaseBlobStore:
        # A Database of the store's own: connections of its own, migrated.
        connections = Database(engine_from_config(config))
        connections.migrate()
        return DatabaseBlobStore(connections)

    if config.blob_store == "database":
        if database is not None and database.engine.name == "sqlite":
            return DatabaseBlobStore(database, shared=True)
        return own()
    os.makedirs(blob_directory(config), exist_ok=True)
    staged = own() if database is None else DatabaseBlobStore(database, shared=True)
    return WriteBackBlobStore(FileBlobStore(blob_directory(config)), staged)
