# -*- test-case-name: tests.ingest.test_spool -*-
"""
The delivery spool: received messages made durable before they are filed.

With C{lmtp-spool: true} LMTP answers 250 once a message is in the spool,
a SQLite file of its own under the data directory (C{delivery-spool.sqlite},
one per node), instead of once it is filed in the mailboxes.  What the
reactor thread hands to L{Spool.append} waits while the spool's thread
writes the previous group; the spool's thread then inserts everything that
waits in one transaction and commits it with one flush of the file's log
(C{synchronous = FULL}), and only then fires each message's L{Deferred}
with its sequence number.

Filing (L{jmapd.ingest.filer}, in a process of its own) reads the records
with a connection of its own (L{SpoolReader}) and records, in the same
transaction as the Emails, the sequence number of the last message it
filed, under the spool's own id (made when the file is created;
L{jmapd.storage.spoolmark}): after a crash the spool's records after that
number are filed again, those up to it never twice.  L{Spool.release}
then deletes the filed records, by the way, in the spool's next write.

A sequence number is never given twice by one spool file, and a spool
file that replaces a lost one has an id of its own, so the database's mark
of the old one says nothing about it.
"""

from __future__ import annotations

import os
import pathlib
import sqlite3
import uuid
from collections.abc import Callable, Sequence
from typing import Any

from attrs import frozen
from twisted.internet.defer import Deferred, fail, succeed
from twisted.logger import Logger
from twisted.python.failure import Failure

log = Logger()

#: The spool's file name under the data directory.
SPOOL_FILE = "delivery-spool.sqlite"

#: The most octets of messages the filing reads for one group (at least
#: one message, however large): groups of large messages are smaller.
MAX_GROUP_BYTES = 64 * 1024 * 1024

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS spool ("
    " seq INTEGER PRIMARY KEY AUTOINCREMENT,"
    " queue_id TEXT NOT NULL,"
    " received REAL NOT NULL,"
    " envelope BLOB NOT NULL,"
    " message BLOB NOT NULL)",
)


@frozen
class SpoolRecord:
    """
    One received message as the spool keeps it.

    @ivar seq: its sequence number (increasing in the order of durability).
    @ivar queue_id: the id its Received fields name.
    @ivar received: when it was received (seconds since the epoch).
    @ivar envelope: the envelope, serialised by the caller.
    @ivar message: the message as received (without trace fields).
    """

    seq: int
    queue_id: str
    received: float
    envelope: bytes
    message: bytes


class Spool:
    """
    The spool file at C{path}, written by one thread of its own.

    @param run: C{run(fn, *args) -> Deferred} calling C{fn} in the spool's
        thread (always the same one: the connection is used only there).
    """

    def __init__(self, path: str, run: Callable[..., Deferred[Any]]) -> None:
        self.path = path
        self._run = run
        self._connection: sqlite3.Connection | None = None
        self._opened = False
        self._broken: Failure | None = None
        self._writing = False
        self._appends: list[tuple[tuple[str, float, bytes, bytes], Deferred[int]]] = []
        self._release: int | None = None
        self._idle: list[Deferred[None]] = []

    def start(self) -> Deferred[str]:
        """
        Open (or create) the spool file.

        @return: a L{Deferred} firing with the spool's id, under which the
            database keeps how far it was filed.
        """
        return self._run(self._start).addErrback(self.broken)

    def open(self, after: int) -> Deferred[int]:
        """
        Once L{start}ed: count the records after C{after} (the last one
        filed): received and acknowledged, not yet filed; and start
        writing (appends made before are written now; the records up to
        C{after} are deleted).
        """
        d = self._run(self._count, after)

        def opened(count: int) -> int:
            self._opened = True
            self.release(after)
            self._kick()
            return count

        return d.addCallbacks(opened, self.broken)

    def broken(self, failure: Failure) -> Failure:
        """
        The spool cannot be used: every append waiting, and every one
        after, fails (LMTP answers 451).
        """
        if self._broken is None:
            log.failure("cannot open the delivery spool {path}", failure, path=self.path)
        self._broken = failure
        appends, self._appends = self._appends, []
        for _, waiting in appends:
            waiting.errback(failure)
        return failure

    def append(self, queue_id: str, received: float, envelope: bytes, message: bytes) -> Deferred[int]:
        """
        Make a message durable in the spool.

        @return: a L{Deferred} firing with its sequence number once the
            transaction that wrote it has committed, or failing if it could
            not be written (then nothing about it may be acknowledged).
        """
        if self._broken is not None:
            return fail(self._broken)
        d: Deferred[int] = Deferred()
        self._appends.append(((queue_id, received, envelope, message), d))
        self._kick()
        return d

    def release(self, upto: int) -> None:
        """
        The records up to C{upto} are filed: delete them with the next write.
        """
        if self._release is None or upto > self._release:
            self._release = upto
        self._kick()

    def idle(self) -> Deferred[None]:
        """
        A L{Deferred} firing once nothing waits to be written.
        """
        if not self._busy():
            return succeed(None)
        d: Deferred[None] = Deferred()
        self._idle.append(d)
        return d

    def close(self) -> Deferred[None]:
        """
        Write what waits, then close the file (in the spool's thread).
        """
        d = self.idle()
        d.addCallback(lambda _: self._run(self._close) if self._connection is not None else None)
        return d

    def _busy(self) -> bool:
        return self._writing or (
            self._opened and bool(self._appends or self._release is not None)
        )

    def _kick(self) -> None:
        """
        Start the next write (everything that waits) unless one runs or
        the file is not open yet: it starts the next one when it is done.
        """
        if self._writing or not self._opened:
            return
        if not (self._appends or self._release is not None):
            self._fire_idle()
            return
        appends, self._appends = self._appends, []
        release, self._release = self._release, None
        self._writing = True
        d = self._run(self._write, [row for row, _ in appends], release)

        def written(seqs: list[int]) -> bool:
            for (_, waiting), seq in zip(appends, seqs, strict=True):
                waiting.callback(seq)
            return True

        def failed(failure: Failure) -> bool:
            log.failure("cannot write {count} messages to the delivery spool {path}", failure,
                        count=len(appends), path=self.path)
            # The release waits for the next write, which the next append
            # or release starts: not at once, which would go round as fast
            # as the file keeps failing.
            if release is not None and (self._release is None or release > self._release):
                self._release = release
            for _, waiting in appends:
                waiting.errback(failure)
            return False

        def next_write(ok: bool) -> None:
            self._writing = False
            if ok:
                self._kick()
            else:
                self._fire_idle()

        d.addCallbacks(written, failed).addCallback(next_write)

    def _fire_idle(self) -> None:
        idle, self._idle = self._idle, []
        for d in idle:
            d.callback(None)

    # In the spool's thread.

    def _start(self) -> str:
        connection = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        try:
            connection.execute("PRAGMA journal_mode = WAL")
            connection.execute("PRAGMA synchronous = FULL")
            with _transaction(connection):
                for statement in _SCHEMA:
                    connection.execute(statement)
                connection.execute(
                    "INSERT OR IGNORE INTO meta (name, value) VALUES ('id', ?)", (uuid.uuid4().hex,)
                )
                spool_id = str(connection.execute("SELECT value FROM meta WHERE name = 'id'").fetchone()[0])
        except BaseException:
            connection.close()
            raise
        # The directory entry of a new file is made durable too.
        _sync_directory(os.path.dirname(os.path.abspath(self.path)))
        self._connection = connection
        return spool_id

    def _count(self, after: int) -> int:
        connection = self._connection
        assert connection is not None
        return int(connection.execute("SELECT count(*) FROM spool WHERE seq > ?", (after,)).fetchone()[0])

    def _write(self, rows: Sequence[tuple[str, float, bytes, bytes]], release: int | None) -> list[int]:
        connection = self._connection
        assert connection is not None
        seqs = []
        with _transaction(connection):
            for row in rows:
                cursor = connection.execute(
                    "INSERT INTO spool (queue_id, received, envelope, message) VALUES (?, ?, ?, ?)", row
                )
                seqs.append(int(cursor.lastrowid or 0))
            if release is not None:
                connection.execute("DELETE FROM spool WHERE seq <= ?", (release,))
        return seqs

    def _close(self) -> None:
        connection, self._connection = self._connection, None
        self._opened = False
        if connection is not None:
            connection.close()


class _transaction:
    """
    C{BEGIN IMMEDIATE} ... C{COMMIT} (or C{ROLLBACK}) on a connection in
    autocommit mode.
    """

    def __init__(self, connection: sqlite3.Connection) -> None:
        self._connection = connection

    def __enter__(self) -> None:
        self._connection.execute("BEGIN IMMEDIATE")

    def __exit__(self, kind: Any, value: Any, traceback: Any) -> None:
        self._connection.execute("COMMIT" if kind is None else "ROLLBACK")


def _sync_directory(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class SpoolReader:
    """
    Reads the records of the spool file at C{path} with a connection of its
    own (in the filing process: SQLite lets it read while the spool's
    thread writes).
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self._connection: sqlite3.Connection | None = None

    def read(self, after: int, limit: int, max_bytes: int = MAX_GROUP_BYTES) -> list[SpoolRecord]:
        """
        The first C{limit} records after C{after}, in order, and no more
        than fit in C{max_bytes} of messages (but at least one).
        """
        if self._connection is None:
            # A URI, so that the path is percent-encoded ("?" or "#" in it).
            uri = pathlib.Path(self.path).absolute().as_uri() + "?mode=ro"
            self._connection = sqlite3.connect(uri, uri=True, check_same_thread=False)
        cursor = self._connection.execute(
            "SELECT seq, queue_id, received, envelope, message FROM spool WHERE seq > ? ORDER BY seq LIMIT ?",
            (after, limit),
        )
        records: list[SpoolRecord] = []
        size = 0
        try:
            # Row by row: the messages past the budget are not read.
            for seq, queue_id, received, envelope, message in cursor:
                size += len(message)
                if records and size > max_bytes:
                    break
                records.append(SpoolRecord(seq, queue_id, received, bytes(envelope), bytes(message)))
        finally:
            cursor.close()
        return records

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None
