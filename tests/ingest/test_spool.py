"""
Tests for delivery with C{lmtp-spool}: the spool file
(L{jmapd.ingest.spool}), its filing (L{jmapd.ingest.filer}), the deliverer
that acknowledges once a message is in the spool and files behind
(L{jmapd.ingest.spooled}), and all of it end to end over LMTP.  A message
is acknowledged once it is durable in the spool, filed exactly once
(L{jmapd.storage.spoolmark}), even across a restart, and a copy that
cannot be filed is held, never dropped.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Callable
from typing import Any

import attrs
from twisted.internet import reactor
from twisted.internet.defer import Deferred, ensureDeferred, maybeDeferred
from twisted.internet.error import ProcessTerminated
from twisted.internet.task import Clock, deferLater
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from jmapd.environment import Environment
from jmapd.ingest.delivery import Envelope, Reply
from jmapd.ingest.filer import ATTEMPTS, FILING_TIMEOUT, FiledGroup, FilerGone, FilerProcess, SpoolFiling
from jmapd.ingest.recipients import bump_addresses_version
from jmapd.ingest.spool import SPOOL_FILE, Spool, SpoolReader, SpoolRecord
from jmapd.ingest.spooled import RETRY_DELAY, SpooledDeliverer
from jmapd.storage import accounts, emails, spoolmark
from jmapd.storage import vacation as storage_vacation
from jmapd.submission import queue
from tests import pg
from tests.ingest.support import LMTPTestCase, message
from tests.ingest.test_delivery import DeliveryTestCase, ManualThreads
from tests.test_config import ConfigTestCase


def run_now(fn: Callable[..., Any], *args: Any) -> Deferred[Any]:
    """
    A spool thread that runs each job at once, in the caller's thread.
    """
    return maybeDeferred(fn, *args)


def rows(path: str, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    """
    What C{sql} reads from the SQLite file at C{path}, on a connection of
    its own (so it sees only what was committed).
    """
    connection = sqlite3.connect(path)
    try:
        return connection.execute(sql, args).fetchall()
    finally:
        connection.close()


def envelope_of(*recipients: tuple[str, str]) -> Envelope:
    return Envelope("bob@example.org", tuple(recipients), "mta.example.org", "127.0.0.1")


class SpoolTestCase(SynchronousTestCase):
    def setUp(self) -> None:
        directory = os.path.abspath(self.mktemp())
        os.makedirs(directory)
        self.path = os.path.join(directory, SPOOL_FILE)

    def open_spool(self, after: int = 0, run: Callable[..., Deferred[Any]] = run_now) -> tuple[Spool, str, int]:
        """
        Start and open a spool on C{self.path} (with a C{run} that runs
        at once); the spool, its id and how many records it held after
        C{after}.
        """
        spool = Spool(self.path, run)
        self.addCleanup(lambda: spool.close() and None)
        spool_id = self.successResultOf(spool.start())
        count = self.successResultOf(spool.open(after))
        return spool, spool_id, count

    def started_step_by_step(self) -> tuple[Spool, ManualThreads]:
        """
        A spool on C{self.path}, started, whose thread's jobs run when the
        test says so (L{ManualThreads}).
        """
        threads = ManualThreads()
        spool = Spool(self.path, threads.run)
        self.addCleanup(lambda: spool.close() and None)
        started = spool.start()
        threads.drain()
        self.successResultOf(started)
        return spool, threads

    def seqs(self) -> list[int]:
        return [seq for (seq,) in rows(self.path, "SELECT seq FROM spool ORDER BY seq")]


class SpoolTests(SpoolTestCase):
    """
    The spool file on its own.
    """


    def test_readerOddPath(self) -> None:
        """
        L{SpoolReader} reads a spool whose path has characters that mean
        something in a URI ("#", "?", "%", a space).
        """
        directory = os.path.abspath(os.path.join(self.mktemp(), "data #1?x=%20 y"))
        os.makedirs(directory)
        path = os.path.join(directory, SPOOL_FILE)
        spool = Spool(path, run_now)
        self.addCleanup(lambda: spool.close() and None)
        self.successResultOf(spool.start())
        self.successResultOf(spool.open(0))
        self.successResultOf(spool.append("q1", 1.0, b"{}", b"one"))
        reader = SpoolReader(path)
        self.addCleanup(reader.close)
        self.assertEqual([record.message for record in reader.read(0, 10)], [b"one"])

    def test_readerByteBudget(self) -> None:
        """
        A group read by L{SpoolReader} stops before the message that would
        take it over its byte budget, but always holds one message, however
        large; the next read goes on from there.
        """
        spool, _, _ = self.open_spool()
        for i, size in enumerate((40, 40, 40, 100)):
            self.successResultOf(spool.append(f"q{i}", float(i), b"{}", b"x" * size))
        reader = SpoolReader(self.path)
        self.addCleanup(reader.close)
        first = reader.read(0, 10, max_bytes=100)
        self.assertEqual([record.queue_id for record in first], ["q0", "q1"])
        second = reader.read(first[-1].seq, 10, max_bytes=100)
        self.assertEqual([record.queue_id for record in second], ["q2"])
        third = reader.read(second[-1].seq, 10, max_bytes=50)
        self.assertEqual([record.queue_id for record in third], ["q3"])
    def test_appendDurableThenReopened(self) -> None:
        """
        Each append fires with a sequence number larger than the one
        before, only once its row is committed (another connection reads
        it when the Deferred fires); a spool opened anew on the same file
        counts every record, and L{SpoolReader} reads them as they were
        appended.
        """
        spool, _, count = self.open_spool()
        self.assertEqual(count, 0)
        appended = [
            ("q1", 1000.5, b'{"e": 1}', b"Subject: one\r\n\r\nbody one\r\n"),
            ("q2", 1001.25, b'{"e": 2}', b"Subject: two\r\n\r\n\x00\xff binary\r\n"),
            ("q3", 1002.0, b'{"e": 3}', b""),
        ]
        seen: list[tuple[int, list[tuple[Any, ...]]]] = []

        def committed(seq: int) -> None:
            seen.append((seq, rows(self.path, "SELECT queue_id FROM spool WHERE seq = ?", seq)))

        for row in appended:
            spool.append(*row).addCallback(committed)
        seqs = [seq for seq, _ in seen]
        self.assertEqual(len(seqs), 3)
        self.assertEqual(seqs, sorted(set(seqs)))
        self.assertEqual([found for _, found in seen], [[("q1",)], [("q2",)], [("q3",)]])
        self.successResultOf(spool.close())

        _, _, again = self.open_spool()
        self.assertEqual(again, 3)
        reader = SpoolReader(self.path)
        self.addCleanup(reader.close)
        self.assertEqual(
            reader.read(0, 10), [SpoolRecord(seq, *row) for seq, row in zip(seqs, appended, strict=True)]
        )

    def test_appendsGroupedWhileWriting(self) -> None:
        """
        An append fires only once the write that holds it has run; the
        appends made while a write runs wait for it, and are written
        together by the next one (one more job of the spool's thread).
        """
        spool, threads = self.started_step_by_step()
        opened = spool.open(0)
        threads.drain()
        self.assertEqual(self.successResultOf(opened), 0)

        fired: list[int] = []
        spool.append("q1", 1.0, b"{}", b"one").addCallback(fired.append)
        self.assertEqual(threads.names(), ["_write"])
        spool.append("q2", 2.0, b"{}", b"two").addCallback(fired.append)
        spool.append("q3", 3.0, b"{}", b"three").addCallback(fired.append)
        self.assertEqual(fired, [])
        self.assertEqual(threads.names(), ["_write"])
        self.assertEqual(rows(self.path, "SELECT count(*) FROM spool"), [(0,)])
        threads.step()
        self.assertEqual(len(fired), 1)
        self.assertEqual(threads.names(), ["_write"])
        threads.step()
        self.assertEqual(len(fired), 3)
        self.assertEqual(fired, sorted(set(fired)))
        self.assertEqual(threads.names(), [])
        self.assertEqual(rows(self.path, "SELECT queue_id FROM spool ORDER BY seq"), [("q1",), ("q2",), ("q3",)])

    def test_openAfter(self) -> None:
        """
        C{open(after)} counts only the records after C{after} (those up
        to it are filed), and the first write deletes those up to it.
        """
        spool, _, _ = self.open_spool()
        seqs = [self.successResultOf(spool.append(f"q{i}", float(i), b"{}", b"m%d" % i)) for i in range(4)]
        self.successResultOf(spool.close())

        spool, threads = self.started_step_by_step()
        opened = spool.open(seqs[1])
        threads.step()
        self.assertEqual(self.successResultOf(opened), 2)
        # Not deleted before the first write.
        self.assertEqual(self.seqs(), seqs)
        self.assertEqual(threads.names(), ["_write"])
        threads.drain()
        self.successResultOf(spool.idle())
        self.assertEqual(self.seqs(), seqs[2:])
        reader = SpoolReader(self.path)
        self.addCleanup(reader.close)
        self.assertEqual([record.message for record in reader.read(0, 10)], [b"m2", b"m3"])

    def test_appendsWaitForOpen(self) -> None:
        """
        An append made before C{open} waits for it; it is written by the
        first write, after the count (which does not include it).
        """
        spool = Spool(self.path, run_now)
        self.addCleanup(lambda: spool.close() and None)
        self.successResultOf(spool.start())
        waiting = spool.append("q1", 1.0, b"{}", b"one")
        self.assertNoResult(waiting)
        self.assertEqual(self.successResultOf(spool.open(0)), 0)
        self.assertEqual(self.seqs(), [self.successResultOf(waiting)])

    def test_sequenceNotReused(self) -> None:
        """
        A sequence number is never given twice by one file, even once the
        records that had the largest ones were released: the database's
        mark would otherwise cover a new message.
        """
        spool, _, _ = self.open_spool()
        first = self.successResultOf(spool.append("q1", 1.0, b"{}", b"one"))
        spool.release(first)
        self.successResultOf(spool.idle())
        self.assertEqual(self.seqs(), [])
        self.successResultOf(spool.close())
        spool, _, count = self.open_spool(after=first)
        self.assertEqual(count, 0)
        self.assertGreater(self.successResultOf(spool.append("q2", 2.0, b"{}", b"two")), first)

    def test_releaseWithNextWrite(self) -> None:
        """
        L{Spool.release} deletes the records up to the number given, not
        those after it.
        """
        spool, _, _ = self.open_spool()
        seqs = [self.successResultOf(spool.append(f"q{i}", float(i), b"{}", b"m")) for i in range(3)]
        spool.release(seqs[1])
        self.successResultOf(spool.idle())
        self.assertEqual(self.seqs(), seqs[2:])

    def test_spoolId(self) -> None:
        """
        The spool's id is the same each time its file is opened, and a
        new file has another one.
        """
        spool, spool_id, _ = self.open_spool()
        self.assertTrue(spool_id)
        self.successResultOf(spool.close())
        _, again, _ = self.open_spool()
        self.assertEqual(again, spool_id)

        self.path = os.path.join(os.path.dirname(self.path), "other-" + SPOOL_FILE)
        _, other, _ = self.open_spool()
        self.assertNotEqual(other, spool_id)

    def test_broken(self) -> None:
        """
        Once the spool is broken, every append fails, those waiting for
        it to open as well as those after.
        """
        spool = Spool(self.path, run_now)
        self.addCleanup(lambda: spool.close() and None)
        self.successResultOf(spool.start())
        waiting = spool.append("q1", 1.0, b"{}", b"one")
        self.assertNoResult(waiting)
        spool.broken(Failure(RuntimeError("the disk is gone")))
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
        self.failureResultOf(waiting, RuntimeError)
        self.failureResultOf(spool.append("q2", 2.0, b"{}", b"two"), RuntimeError)
        self.assertEqual(rows(self.path, "SELECT count(*) FROM spool"), [(0,)])

    def test_cannotStart(self) -> None:
        """
        A spool file that cannot be created makes C{start} fail and every
        append fail after.
        """
        spool = Spool(os.path.join(self.path, "no", "such", "directory", SPOOL_FILE), run_now)
        self.failureResultOf(spool.start(), sqlite3.OperationalError)
        self.assertEqual(len(self.flushLoggedErrors(sqlite3.OperationalError)), 1)
        self.failureResultOf(spool.append("q1", 1.0, b"{}", b"one"), sqlite3.OperationalError)

    def test_readerInOrderWithLimit(self) -> None:
        """
        L{SpoolReader.read} returns the first C{limit} records after the
        number given, in order; it sees what is written after it first
        read.
        """
        spool, _, _ = self.open_spool()
        reader = SpoolReader(self.path)
        self.addCleanup(reader.close)
        self.assertEqual(reader.read(0, 10), [])
        seqs = [self.successResultOf(spool.append(f"q{i}", float(i), b"{}", b"m%d" % i)) for i in range(5)]
        self.assertEqual([record.seq for record in reader.read(0, 2)], seqs[:2])
        self.assertEqual([record.queue_id for record in reader.read(seqs[1], 2)], ["q2", "q3"])
        self.assertEqual([record.seq for record in reader.read(seqs[3], 10)], seqs[4:])
        self.assertEqual(reader.read(seqs[4], 10), [])


class SpoolFilingTestCase(DeliveryTestCase):
    """
    A real database (as L{DeliveryTestCase}), a spool under its data
    directory whose writes run at once, and L{SpoolFiling} on them.
    """

    def setUp(self) -> None:
        super().setUp()
        os.makedirs(self.env.config.db_path, exist_ok=True)
        self.spool_path = os.path.join(self.env.config.db_path, SPOOL_FILE)
        self.spool = Spool(self.spool_path, run_now)
        self.addCleanup(lambda: self.spool.close() and None)
        self.spool_id = self.successResultOf(self.spool.start())
        self.successResultOf(self.spool.open(0))
        self.filing = self.new_filing()

    def new_filing(self, max_batch: int = 200) -> SpoolFiling:
        """
        A L{SpoolFiling} as the filing process makes it (its reader of
        its own).
        """
        reader = SpoolReader(self.spool_path)
        self.addCleanup(reader.close)
        return SpoolFiling(self.env, "mx.example.com", self.spool_id, reader, max_batch=max_batch)

    def spool_message(self, envelope: Envelope, subject: str, queue_id: str = "") -> int:
        """
        Append a message to the spool (as L{SpooledDeliverer} does); its
        sequence number.
        """
        queue_id = queue_id or f"q-{subject}"
        d = self.spool.append(queue_id, 1_700_000_000.0, envelope.to_bytes(), message(subject=subject))
        return int(self.successResultOf(d))

    def to(self, account_id: str, name: str, subject: str) -> int:
        return self.spool_message(envelope_of((f"{name}@example.com", account_id)), subject)

    def mark(self) -> int:
        return int(self.env.database.run_sync(spoolmark.filed, self.spool_id))

    def held(self) -> list[spoolmark.HeldMessage]:
        return list(self.env.database.run_sync(spoolmark.held_messages))

    def write_transactions(self) -> list[bool]:
        """
        Record each write transaction begun from now on.
        """
        engine = self.env.database.engine
        real_begin = engine.begin
        writes: list[bool] = []

        def begin(conn: Any, write: bool) -> Any:
            if write:
                writes.append(True)
            return real_begin(conn, write)

        self.patch(engine, "begin", begin)
        return writes


class SpoolFilingTests(SpoolFilingTestCase):
    """
    L{SpoolFiling.file_next}: a group of the spool's records filed in one
    transaction that records how far the spool is filed.
    """

    def test_filesGroup(self) -> None:
        """
        C{file_next} files every record after the mark in one write
        transaction, which records the last one's sequence number as the
        mark; it reports that number, the count, the states to push (the
        Email state of each account) and the address version; the stored
        message has the trace fields naming the record's queue id.
        """
        alice = self.add_account("alice")
        bob = self.add_account("bob")
        seqs = [self.to(alice, "alice", "one"), self.to(bob, "bob", "two"), self.to(alice, "alice", "three")]
        version = self.env.database.run_sync(bump_addresses_version, write=True)
        writes = self.write_transactions()
        group = self.filing.file_next()
        assert group is not None
        self.assertEqual(writes, [True])
        self.assertEqual((group.filed, group.count, group.held, group.wake), (seqs[-1], 3, 0, False))
        self.assertEqual(self.mark(), seqs[-1])
        self.assertEqual(self.subjects(alice), ["one", "three"])
        self.assertEqual(self.subjects(bob), ["two"])
        self.assertEqual(set(group.states), {alice, bob})
        self.assertIn("Email", group.states[alice])
        self.assertIn("Email", group.states[bob])
        self.assertEqual(group.version, version)
        self.assertGreater(version, 0)
        (row,) = self.env.database.run_sync(emails.get_rows, bob, None, ["blob_id"])
        stored = self.env.blobs.read(row["blob_id"])
        self.assertTrue(stored.startswith(b"Return-Path: <bob@example.org>\r\nDelivered-To: bob@example.com\r\n"))
        self.assertIn(b"by mx.example.com (jmapd) with LMTP id q-two\r\n", stored)
        self.assertTrue(stored.endswith(message(subject="two")))
        self.assertEqual(self.held(), [])
        # The spool itself is not changed by filing (the server releases).
        self.assertEqual(len(rows(self.spool_path, "SELECT seq FROM spool")), 3)

    def test_maxBatch(self) -> None:
        """
        A group holds at most C{max_batch} records; the next call files
        the rest.
        """
        alice = self.add_account("alice")
        seqs = [self.to(alice, "alice", subject) for subject in ("one", "two", "three")]
        filing = self.new_filing(max_batch=2)
        first = filing.file_next()
        assert first is not None
        self.assertEqual((first.filed, first.count), (seqs[1], 2))
        second = filing.file_next()
        assert second is not None
        self.assertEqual((second.filed, second.count), (seqs[2], 1))
        self.assertIsNone(filing.file_next())
        self.assertEqual(self.subjects(alice), ["one", "three", "two"])

    def test_poisonMessageHeld(self) -> None:
        """
        A message that makes its group's whole transaction fail does not
        stop delivery: after ATTEMPTS failures the group is filed one
        message at a time, the others are filed, and the one that fails
        ATTEMPTS times alone is held for all its recipients, with why;
        then groups are filed whole again.
        """
        alice = self.add_account("alice")
        real_flush = emails.IngestBatch.flush

        def flush(batch: emails.IngestBatch) -> None:
            subjects = self.env.database.current_transaction().fetchall("SELECT subject FROM emails")
            if ("poison",) in subjects:
                raise RuntimeError("cannot file this one")
            real_flush(batch)

        self.patch(emails.IngestBatch, "flush", flush)
        seqs = [self.to(alice, "alice", subject) for subject in ("good1", "poison", "good2")]
        for _ in range(ATTEMPTS):
            self.assertRaises(RuntimeError, self.filing.file_next)
        self.assertEqual(self.subjects(alice), [])
        first = self.filing.file_next()
        assert first is not None
        self.assertEqual((first.filed, first.count, first.held), (seqs[0], 1, 0))
        for _ in range(ATTEMPTS - 1):
            self.assertRaises(RuntimeError, self.filing.file_next)
        held = self.filing.file_next()
        assert held is not None
        self.assertEqual((held.filed, held.count, held.held), (seqs[1], 1, 1))
        (message_,) = self.held()
        self.assertEqual(message_.seq, seqs[1])
        self.assertEqual(Envelope.from_bytes(message_.envelope).recipients, (("alice@example.com", alice),))
        self.assertIn("RuntimeError: cannot file this one", message_.reason)
        self.to(alice, "alice", "good3")
        last = self.filing.file_next()
        assert last is not None
        self.assertEqual(last.count, 1)
        rest = self.filing.file_next()
        assert rest is not None
        self.assertEqual(rest.count, 1)
        self.assertEqual(self.subjects(alice), ["good1", "good2", "good3"])
        self.assertEqual(self.mark(), seqs[2] + 1)

    def test_databaseErrorsNeverHold(self) -> None:
        """
        A database that keeps failing (a disk error at every commit) fails
        the group as often as it does, but never makes it filed one at a
        time nor held: once the database works, the group is filed whole.
        """
        alice = self.add_account("alice")
        seqs = [self.to(alice, "alice", subject) for subject in ("one", "two")]
        patcher = self.fail_commits()
        for _ in range(2 * ATTEMPTS + 1):
            self.assertRaises(sqlite3.OperationalError, self.filing.file_next)
        patcher.restore()
        group = self.filing.file_next()
        assert group is not None
        self.assertEqual((group.filed, group.count, group.held), (seqs[1], 2, 0))
        self.assertEqual(self.held(), [])
        self.assertEqual(self.subjects(alice), ["one", "two"])

    def test_nothingAfterMark(self) -> None:
        """
        C{file_next} returns C{None}, and writes nothing, when no record
        waits after the mark: an empty spool, or everything filed.
        """
        alice = self.add_account("alice")
        writes = self.write_transactions()
        self.assertIsNone(self.filing.file_next())
        self.to(alice, "alice", "one")
        self.assertIsNotNone(self.filing.file_next())
        self.assertEqual(len(writes), 1)
        self.assertIsNone(self.filing.file_next())
        self.assertEqual(len(writes), 1)
        self.assertEqual(self.subjects(alice), ["one"])

    def test_crashAfterCommit(self) -> None:
        """
        After a "crash" that left the filed records in the spool (the mark
        committed, the spool not released), a new filing on the same
        database and spool reads the mark from the database: it files
        none of them again, and files the records after the mark once.
        """
        alice = self.add_account("alice")
        self.to(alice, "alice", "one")
        second = self.to(alice, "alice", "two")
        group = self.filing.file_next()
        assert group is not None
        self.assertEqual(group.filed, second)
        third = self.to(alice, "alice", "three")

        filing = self.new_filing()
        group = filing.file_next()
        assert group is not None
        self.assertEqual((group.filed, group.count), (third, 1))
        self.assertIsNone(filing.file_next())
        self.assertEqual(self.subjects(alice), ["one", "three", "two"])
        # And a third one files nothing.
        self.assertIsNone(self.new_filing().file_next())
        self.assertEqual(self.subjects(alice), ["one", "three", "two"])

    def test_filedInResolvedAccount(self) -> None:
        """
        A copy is filed in the account RCPT resolved (the envelope's),
        not in whatever owns its address when it is filed.
        """
        alice = self.add_account("alice")
        self.spool_message(envelope_of(("someone.else@example.com", alice)), "one")
        group = self.filing.file_next()
        assert group is not None
        self.assertEqual(group.held, 0)
        self.assertEqual(self.subjects(alice), ["one"])

    def test_accountRemovedIsHeld(self) -> None:
        """
        A copy whose account was removed between RCPT and filing is held
        in delivery_held (with only that recipient and a 550 "no such
        mailbox" reason), in the filing transaction, while the other
        recipient of the same message gets it.
        """
        alice = self.add_account("alice")
        carol = self.add_account("carol")
        envelope = envelope_of(("alice@example.com", alice), ("carol@example.com", carol))
        seq = self.spool_message(envelope, "both", queue_id="q-both")
        self.env.database.run_sync(accounts.remove_account, "carol", write=True)
        group = self.filing.file_next()
        assert group is not None
        self.assertEqual((group.filed, group.count, group.held), (seq, 1, 1))
        self.assertEqual(self.subjects(alice), ["both"])
        self.assertEqual(self.mark(), seq)
        (held,) = self.held()
        self.assertEqual((held.spool_id, held.seq, held.queue_id), (self.spool_id, seq, "q-both"))
        self.assertEqual(held.message, message(subject="both"))
        self.assertEqual(Envelope.from_bytes(held.envelope).recipients, (("carol@example.com", carol),))
        self.assertEqual(Envelope.from_bytes(held.envelope).mail_from, "bob@example.org")
        self.assertTrue(held.reason.startswith("550 "), held.reason)
        self.assertIn("carol@example.com", held.reason)
        self.assertIn("no such mailbox", held.reason)
        self.assertNotIn("alice", held.reason)
        # Another filing files nothing of it again, and it stays held.
        self.assertIsNone(self.new_filing().file_next())
        self.assertEqual(len(self.held()), 1)

    def test_heldWithReceivedTime(self) -> None:
        """
        A held message keeps when it was received (as the spool recorded
        it, what C{jmapd-admin spool held --mbox} dates it with), not
        when it was held.
        """
        carol = self.add_account("carol")
        self.to(carol, "carol", "gone")
        self.env.clock.advance(1_800_000_000)
        self.env.database.run_sync(accounts.remove_account, "carol", write=True)
        self.assertIsNotNone(self.filing.file_next())
        (held,) = self.held()
        self.assertEqual(held.held_at, 1_800_000_000.0)
        self.assertEqual(held.received, 1_700_000_000.0)

    def test_filingFailureIsHeld(self) -> None:
        """
        A copy whose filing raised is held (451 as the reason), while the
        other messages of the group are filed.
        """
        alice = self.add_account("alice")
        self.fail_filing("two")
        seqs = [self.to(alice, "alice", subject) for subject in ("one", "two", "three")]
        group = self.filing.file_next()
        assert group is not None
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
        self.assertEqual((group.filed, group.count, group.held), (seqs[2], 3, 1))
        self.assertEqual(self.subjects(alice), ["one", "three"])
        (held,) = self.held()
        self.assertEqual(held.seq, seqs[1])
        self.assertEqual(held.message, message(subject="two"))
        self.assertEqual(Envelope.from_bytes(held.envelope).recipients, (("alice@example.com", alice),))
        self.assertTrue(held.reason.startswith("451 "), held.reason)
        self.assertEqual(self.mark(), seqs[2])

    def test_failedCommitRetried(self) -> None:
        """
        When the filing transaction fails, C{file_next} raises and nothing
        of it is committed (no Email, no mark, no held row); the next call
        files the same records, once.
        """
        alice = self.add_account("alice")
        carol = self.add_account("carol")
        first = self.to(alice, "alice", "one")
        second = self.spool_message(envelope_of(("alice@example.com", alice), ("carol@example.com", carol)), "two")
        self.env.database.run_sync(accounts.remove_account, "carol", write=True)
        failing = self.fail_commits()
        self.assertRaises(sqlite3.OperationalError, self.filing.file_next)
        failing.restore()
        self.assertEqual(self.subjects(alice), [])
        self.assertEqual(self.mark(), 0)
        self.assertEqual(self.held(), [])

        group = self.filing.file_next()
        assert group is not None
        self.assertEqual((group.filed, group.count, group.held), (second, 2, 1))
        self.assertGreater(second, first)
        self.assertEqual(self.subjects(alice), ["one", "two"])
        self.assertEqual([held.seq for held in self.held()], [second])
        self.assertIsNone(self.filing.file_next())

    def test_heldCountedOnceWhenRunAgain(self) -> None:
        """
        When the filing transaction loses to a concurrent one and the
        database runs it again, the group reports each held message once,
        as delivery_held holds it once.
        """
        alice = self.add_account("alice")
        carol = self.add_account("carol")
        self.spool_message(envelope_of(("alice@example.com", alice), ("carol@example.com", carol)), "both")
        self.env.database.run_sync(accounts.remove_account, "carol", write=True)
        engine = self.env.database.engine
        real_commit = engine.commit
        lost: list[bool] = []

        class Lost(Exception):
            pass

        real_hold = spoolmark.hold
        holding: list[bool] = []

        def hold(txn: Any, held: spoolmark.HeldMessage) -> None:
            holding.append(True)
            real_hold(txn, held)

        def commit(conn: Any) -> None:
            # The filing transaction's first commit (not the mark's read).
            if holding and not lost:
                lost.append(True)
                raise Lost("lost to a concurrent transaction")
            real_commit(conn)

        self.patch(spoolmark, "hold", hold)
        self.patch(engine, "commit", commit)
        self.patch(engine, "is_transient", lambda error: isinstance(error, Lost))
        group = self.filing.file_next()
        assert group is not None
        self.assertEqual(lost, [True])
        self.assertEqual(len(holding), 2)
        self.assertEqual(self.subjects(alice), ["both"])
        self.assertEqual(len(self.held()), 1)
        self.assertEqual(group.held, 1)

    def test_vacationWakes(self) -> None:
        """
        A group that queued a vacation reply reports C{wake} (the server's
        process wakes its submission queue); one that did not, does not.
        """
        self.env.config = attrs.evolve(self.env.config, smtp_relay_host="127.0.0.1", smtp_relay_port=9)
        alice = self.add_account("alice")
        bob = self.add_account("bob")
        self.env.database.run_sync(
            storage_vacation.set_vacation, alice,
            storage_vacation.Vacation(is_enabled=True, text_body="Away."), write=True,
        )
        filing = self.new_filing()
        self.to(bob, "bob", "no vacation")
        group = filing.file_next()
        assert group is not None
        self.assertFalse(group.wake)
        self.to(alice, "alice", "vacation")
        group = filing.file_next()
        assert group is not None
        self.assertTrue(group.wake)
        queued = self.env.database.run_sync(lambda txn: txn.fetchall("SELECT account_id FROM outgoing_queue"))
        self.assertEqual([account for (account,) in queued], [alice])

    def test_throughSpooledDeliverer(self) -> None:
        """
        With L{SpoolFiling} as its C{file_next} (run at once), a
        L{SpooledDeliverer} files what it acknowledged, in the account,
        with the queue id its 250 named, and the spool releases it.
        """
        alice = self.add_account("alice")
        deliverer = SpooledDeliverer(self.env, self.resolver, self.spool, lambda: maybeDeferred(self.filing.file_next))
        deliverer.recovered(0)
        answers: list[list[Reply]] = []
        deliverer.deliver(envelope_of(("alice@example.com", alice)), message(subject="one")).addCallback(
            answers.append
        )
        ((reply,),) = answers
        self.assertEqual(reply.code, 250)
        queue_id = reply.text.rsplit(" ", 1)[1]
        self.successResultOf(deliverer.idle())
        self.successResultOf(self.spool.idle())
        self.assertEqual(self.subjects(alice), ["one"])
        (row,) = self.env.database.run_sync(emails.get_rows, alice, None, ["blob_id"])
        self.assertIn(f"with LMTP id {queue_id}\r\n".encode(), self.env.blobs.read(row["blob_id"]))
        self.assertEqual(rows(self.spool_path, "SELECT count(*) FROM spool"), [(0,)])
        self.assertEqual((deliverer.batches, deliverer.messages, deliverer.held), (1, 1, 0))


class FakeFiling:
    """
    A C{file_next} whose answers the test gives.
    """

    def __init__(self) -> None:
        self.calls: list[Deferred[FiledGroup | None]] = []

    def file_next(self) -> Deferred[FiledGroup | None]:
        d: Deferred[FiledGroup | None] = Deferred()
        self.calls.append(d)
        return d


class FakeResolver:
    def __init__(self) -> None:
        self.versions: list[int] = []

    def observe_version(self, version: int) -> None:
        self.versions.append(version)


class Kicks:
    def __init__(self) -> None:
        self.count = 0

    def kick(self) -> None:
        self.count += 1


class SpooledDelivererTests(SpoolTestCase):
    """
    L{SpooledDeliverer}: 250 once in the spool, filing behind, one group
    at a time, by a C{file_next} the test answers.
    """

    def setUp(self) -> None:
        super().setUp()
        self.env = Environment(config=None, registry=None, database=None, blobs=None, clock=Clock())
        self.published: list[dict[str, dict[str, int]]] = []
        self.env.state_listeners.append(self.published.append)
        self.resolver = FakeResolver()
        self.filing = FakeFiling()
        self.spool = Spool(self.path, run_now)
        self.addCleanup(lambda: self.spool.close() and None)
        self.successResultOf(self.spool.start())

    def deliverer(self, backlog: int = 200, recover: bool = True) -> SpooledDeliverer:
        deliverer = SpooledDeliverer(self.env, self.resolver, self.spool, self.filing.file_next, backlog=backlog)
        if recover:
            deliverer.recovered(self.successResultOf(self.spool.open(0)))
        return deliverer

    def deliver(self, deliverer: SpooledDeliverer, *addresses: str) -> list[list[Reply]]:
        answers: list[list[Reply]] = []
        envelope = envelope_of(*((address, "account-" + address) for address in addresses or ("alice@example.com",)))
        deliverer.deliver(envelope, message()).addCallback(answers.append)
        return answers

    def test_acknowledgedBeforeFiling(self) -> None:
        """
        Each recipient gets 250 "queued as" once the message is in the
        spool, before it is filed (C{file_next} was asked, has not
        answered); the spool holds it with that queue id and envelope.
        """
        deliverer = self.deliverer()
        answers = self.deliver(deliverer, "alice@example.com", "carol@example.com")
        ((alice, carol),) = answers
        self.assertEqual((alice.code, carol.code), (250, 250))
        self.assertTrue(alice.text.startswith("2.0.0 <alice@example.com> queued as "), alice.text)
        queue_id = alice.text.rsplit(" ", 1)[1]
        self.assertEqual(carol.text, f"2.0.0 <carol@example.com> queued as {queue_id}")
        self.assertEqual(len(self.filing.calls), 1)
        self.assertNoResult(self.filing.calls[0])
        ((spooled_id, envelope),) = rows(self.path, "SELECT queue_id, envelope FROM spool")
        self.assertEqual(spooled_id, queue_id)
        self.assertEqual(
            Envelope.from_bytes(envelope).recipients,
            (("alice@example.com", "account-alice@example.com"), ("carol@example.com", "account-carol@example.com")),
        )
        self.assertNoResult(deliverer.idle())

    def test_nothingFiledBeforeRecovered(self) -> None:
        """
        Before L{SpooledDeliverer.recovered}, messages are acknowledged
        once in the spool but nothing is filed; C{recovered} counts what
        the spool held from before with them.
        """
        self.successResultOf(self.spool.open(0))
        self.successResultOf(self.spool.append("old", 1.0, b"{}", b"old"))
        self.successResultOf(self.spool.close())
        self.successResultOf(self.spool.start())
        deliverer = self.deliverer(recover=False)
        answers = self.deliver(deliverer)
        self.assertEqual(answers, [])
        count = self.successResultOf(self.spool.open(0))
        self.assertEqual(count, 1)
        self.assertEqual(answers[0][0].code, 250)
        self.assertEqual(self.filing.calls, [])
        deliverer.recovered(count)
        self.assertEqual(len(self.filing.calls), 1)
        # One group of one leaves one to file.
        self.filing.calls[0].callback(FiledGroup(filed=1, count=1))
        self.assertEqual(len(self.filing.calls), 2)
        self.filing.calls[1].callback(FiledGroup(filed=2, count=1))
        self.assertEqual(len(self.filing.calls), 2)
        self.successResultOf(deliverer.idle())

    def test_backpressure(self) -> None:
        """
        With a backlog of one, the second message's 250 waits until the
        group before it is filed: acknowledgements do not run ahead of
        filing by more than the backlog.
        """
        deliverer = self.deliverer(backlog=1)
        first = self.deliver(deliverer)
        self.assertEqual(first[0][0].code, 250)
        second = self.deliver(deliverer)
        self.assertEqual(second, [])
        self.assertEqual(len(self.seqs()), 2)
        self.assertEqual(len(self.filing.calls), 1)
        self.filing.calls[0].callback(FiledGroup(filed=self.seqs()[0], count=1))
        self.assertEqual(second[0][0].code, 250)
        self.assertEqual(len(self.filing.calls), 2)

    def test_groupApplied(self) -> None:
        """
        Once a group is filed, its states are published to the state
        listeners, the resolver learns the address version, the
        submission queue is woken for a vacation reply, the spool
        deletes the records up to the group's last one, the counters
        grow, and C{idle} fires.
        """
        kicks = Kicks()
        queue.watch(self.env, kicks)
        self.addCleanup(lambda: queue._services.pop(id(self.env), None))
        deliverer = self.deliverer()
        self.deliver(deliverer)
        self.deliver(deliverer)
        first, second = self.seqs()
        idle = deliverer.idle()
        self.assertNoResult(idle)
        self.filing.calls[0].callback(
            FiledGroup(filed=first, count=1, held=1, states={"a1": {"Email": 5}}, version=7, wake=True)
        )
        self.assertEqual(self.published, [{"a1": {"Email": 5}}])
        self.assertEqual(self.resolver.versions, [7])
        self.assertEqual(kicks.count, 1)
        self.successResultOf(self.spool.idle())
        self.assertEqual(self.seqs(), [second])
        self.assertNoResult(idle)
        self.assertEqual(len(self.filing.calls), 2)
        self.filing.calls[1].callback(FiledGroup(filed=second, count=1, version=8))
        self.assertEqual(self.published, [{"a1": {"Email": 5}}])
        self.assertEqual(self.resolver.versions, [7, 8])
        self.assertEqual(kicks.count, 1)
        self.successResultOf(idle)
        self.successResultOf(self.spool.idle())
        self.assertEqual(self.seqs(), [])
        self.assertEqual((deliverer.batches, deliverer.messages, deliverer.held), (2, 2, 1))
        self.assertEqual(len(self.filing.calls), 2)

    def test_failureRetried(self) -> None:
        """
        When filing fails, nothing is answered 451 (the 250s were given;
        later messages get 250 too), the records stay in the spool, and
        the group is asked for again RETRY_DELAY seconds later, not
        before.
        """
        deliverer = self.deliverer()
        first = self.deliver(deliverer)
        self.filing.calls[0].errback(Failure(RuntimeError("the database is gone")))
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
        second = self.deliver(deliverer)
        self.assertEqual([first[0][0].code, second[0][0].code], [250, 250])
        self.assertEqual(len(self.seqs()), 2)
        self.assertEqual(len(self.filing.calls), 1)
        self.env.clock.advance(RETRY_DELAY - 0.5)
        self.assertEqual(len(self.filing.calls), 1)
        self.env.clock.advance(0.5)
        self.assertEqual(len(self.filing.calls), 2)
        self.filing.calls[1].callback(FiledGroup(filed=self.seqs()[-1], count=2))
        self.successResultOf(deliverer.idle())
        self.assertEqual(len(self.filing.calls), 2)

    def test_stop(self) -> None:
        """
        L{SpooledDeliverer.stop} sends the 250s waiting for the backlog
        (their messages are in the spool), fires once the group being
        filed is done, and no group is asked for after it, nor a retry.
        """
        deliverer = self.deliverer(backlog=1)
        self.deliver(deliverer)
        second = self.deliver(deliverer)
        self.assertEqual(second, [])
        stopped = deliverer.stop()
        self.assertEqual(second[0][0].code, 250)
        self.assertNoResult(stopped)
        third = self.deliver(deliverer)
        self.assertEqual(third[0][0].code, 250)
        self.filing.calls[0].callback(FiledGroup(filed=self.seqs()[0], count=1))
        self.successResultOf(stopped)
        self.env.clock.advance(RETRY_DELAY * 2)
        self.assertEqual(len(self.filing.calls), 1)
        self.assertEqual(len(self.seqs()), 2)

    def test_stopCancelsRetry(self) -> None:
        """
        A retry waiting when the deliverer stops is not run.
        """
        deliverer = self.deliverer()
        self.deliver(deliverer)
        self.filing.calls[0].errback(Failure(RuntimeError("the database is gone")))
        self.flushLoggedErrors(RuntimeError)
        self.successResultOf(deliverer.stop())
        self.env.clock.advance(RETRY_DELAY * 2)
        self.assertEqual(len(self.filing.calls), 1)

    def test_noneResetsCount(self) -> None:
        """
        A C{None} group (nothing was left: the count was off) sets the
        count of unfiled messages to 0: no group is asked for again and
        C{idle} fires.
        """
        deliverer = self.deliverer(recover=False)
        self.successResultOf(self.spool.open(0))
        deliverer.recovered(3)
        idle = deliverer.idle()
        self.filing.calls[0].callback(None)
        self.successResultOf(idle)
        self.assertEqual(len(self.filing.calls), 1)
        self.assertFalse(deliverer.busy)

    def test_noneKeepsMessagesSpooledMeanwhile(self) -> None:
        """
        A C{None} group says nothing about a message acknowledged while it
        was asked for (spooled after the filing read the spool): it is
        filed by a group of its own.
        """
        deliverer = self.deliverer(recover=False)
        self.successResultOf(self.spool.open(0))
        deliverer.recovered(1)
        self.assertEqual(len(self.filing.calls), 1)
        answers = self.deliver(deliverer)
        self.assertEqual(answers[0][0].code, 250)
        self.filing.calls[0].callback(None)
        self.assertEqual(len(self.filing.calls), 2, "the message acknowledged meanwhile is never filed")
        self.assertNoResult(deliverer.idle())

    def test_notSpooled(self) -> None:
        """
        A message the spool cannot take gets 451 for each recipient, and
        nothing is filed.
        """
        deliverer = self.deliverer()
        self.spool.broken(Failure(RuntimeError("the disk is gone")))
        self.flushLoggedErrors(RuntimeError)
        answers = self.deliver(deliverer, "alice@example.com", "carol@example.com")
        self.assertEqual([reply.code for reply in answers[0]], [451, 451])
        self.assertEqual(self.filing.calls, [])
        self.successResultOf(deliverer.idle())


class FakeProcess:
    """
    The process transport L{FakeReactor.spawnProcess} returns.
    """

    pid = 4242

    def __init__(self, protocol: Any) -> None:
        self.protocol = protocol
        self.written: list[bytes] = []
        self.signals: list[str] = []

    def write(self, data: bytes) -> None:
        self.written.append(data)

    def signalProcess(self, signal: str) -> None:
        self.signals.append(signal)


class FakeReactor(Clock):
    """
    A clock that "spawns" L{FakeProcess}es.
    """

    def __init__(self) -> None:
        super().__init__()
        self.processes: list[FakeProcess] = []

    def spawnProcess(self, protocol: Any, executable: str, args: Any, env: Any = None) -> FakeProcess:
        process = FakeProcess(protocol)
        self.processes.append(process)
        return process


class FilerProcessTests(SynchronousTestCase):
    """
    L{FilerProcess}: a group asked for is answered from the process's
    output, and a process that does not answer is killed.
    """

    def test_answered(self) -> None:
        """
        C{file_next} writes C{F} and fires with the group the process's
        next line gives; the watchdog is cancelled.
        """
        reactor = FakeReactor()
        filer = FilerProcess(reactor, None, "spool", "host")
        d = filer.file_next()
        (process,) = reactor.processes
        self.assertEqual(process.written[-1], b"F\n")
        filer.outReceived(b'{"group":{"filed":7,"count":2,"held":0,"states":{},"version":3,"wake":false}}\n')
        self.assertEqual(self.successResultOf(d), FiledGroup(7, 2, 0, {}, 3, False))
        self.assertEqual(reactor.getDelayedCalls(), [])

    def test_hungKilled(self) -> None:
        """
        A process that has not answered a group in FILING_TIMEOUT seconds
        is killed; the group fails with FilerGone once it has ended, and
        the next group starts a new process.
        """
        reactor = FakeReactor()
        filer = FilerProcess(reactor, None, "spool", "host")
        d = filer.file_next()
        (process,) = reactor.processes
        reactor.advance(FILING_TIMEOUT - 1)
        self.assertEqual(process.signals, [])
        self.assertNoResult(d)
        reactor.advance(1)
        self.assertEqual(process.signals, ["KILL"])
        filer.processEnded(Failure(ProcessTerminated(signal=9)))
        self.failureResultOf(d, FilerGone)
        filer.file_next()
        self.assertEqual(len(reactor.processes), 2)


class FilerProcessLogTests(SynchronousTestCase):
    """
    What the filing process logs (JSON events on its standard error)
    reaches the server's log as the event it was, with its level; other
    output (a crash's traceback) is logged as a warning.
    """

    def test_eventsRelogged(self) -> None:
        """
        A JSON log event from the process is published again with its
        level, format and fields; a line that is not one is a warning
        naming the line.
        """
        from twisted.logger import LogLevel, capturedLogs, eventAsJSON

        filer = FilerProcess(None, None, "spool", "host")
        event = {
            "log_level": LogLevel.critical,
            "log_format": "message {queue_id} is held",
            "log_namespace": "jmapd.ingest.filer",
            "queue_id": "q1",
            "log_time": 1.0,
        }
        with capturedLogs() as events:
            filer.errReceived(eventAsJSON(event).encode("utf-8") + b"\nTraceback (most")
            filer.errReceived(b" recent call last):\n")
        self.assertEqual(len(events), 2)
        self.assertEqual(events[0]["log_level"], LogLevel.critical)
        self.assertEqual(events[0]["queue_id"], "q1")
        self.assertEqual(events[0]["log_format"], "message {queue_id} is held")
        self.assertEqual(events[1]["log_level"], LogLevel.warn)
        self.assertEqual(events[1]["line"], "Traceback (most recent call last):")


class SpoolLMTPTests(LMTPTestCase):
    """
    LMTP delivery end to end with C{lmtp-spool: true}, filed by the
    filing process.
    """

    def deliver(self, port: int, subject: str) -> Any:
        client = self.connect(port)
        client.ehlo("mta.example.org")
        self.assertEqual(client.mail("bob@example.org")[0], 250)
        self.assertEqual(client.rcpt("alice@example.com")[0], 250)
        reply = client.data(message(subject=subject))
        client.quit()
        return reply

    @staticmethod
    def deliverer_of(lmtp: Any) -> SpooledDeliverer:
        deliverer = lmtp.deliverer
        assert isinstance(deliverer, SpooledDeliverer)
        return deliverer

    async def until(self, predicate: Callable[[], bool], timeout: float = 15.0) -> None:
        waited = 0.0
        while not predicate():
            if waited > timeout:
                raise AssertionError("timed out")
            await deferLater(reactor, 0.02, lambda: None)
            waited += 0.02

    def test_vacationReplySent(self) -> Any:
        """
        A vacation reply that the filing process queues is sent through
        the relay at once: the server's queue is woken by the group's
        report (its own polling would wait a minute).
        """
        from jmapd.storage import vacation as storage_vacation
        from tests.submission.support import RecordingRelay, sending_config

        async def run() -> None:
            relay = RecordingRelay(self)
            relay_port = relay.start()
            server, _, port = await self.start_lmtp(
                data=os.path.abspath(self.mktemp()), lmtp_spool=True, **sending_config(relay_port)
            )
            alice = server.add_account("alice", ("alice@example.com",))
            server.env.database.run_sync(
                storage_vacation.set_vacation,
                alice,
                storage_vacation.Vacation(is_enabled=True, text_body="Away."),
                write=True,
            )
            code, _ = await self.in_thread(self.deliver, port, "while away")
            self.assertEqual(code, 250)
            await self.until(lambda: bool(relay.received))
            (reply,) = relay.received
            self.assertEqual(reply.mail_from, "")
            self.assertEqual(reply.rcpt_to, ["bob@example.org"])
            self.assertIn(b"Auto-Submitted: auto-replied", reply.data)

        return ensureDeferred(run())

    def test_delivered(self) -> Any:
        """
        A message delivered over LMTP gets 250 ("queued as") and is an
        Email of the account once the deliverer is idle; the spool file
        is under db-path, and no longer holds it.
        """

        async def run() -> None:
            data = os.path.abspath(self.mktemp())
            server, lmtp, port = await self.start_lmtp(data=data, lmtp_spool=True)
            alice = server.add_account("alice", ("alice@example.com",))
            code, text = await self.in_thread(self.deliver, port, "one")
            self.assertEqual(code, 250)
            self.assertTrue(text.startswith(b"2.0.0 <alice@example.com> queued as "), text)
            deliverer = self.deliverer_of(lmtp)
            await deliverer.idle()
            (stored,) = self.stored(server, alice)
            self.assertTrue(stored.endswith(message(subject="one")))
            queue_id = text.rsplit(b" ", 1)[1]
            self.assertIn(b" with LMTP id " + queue_id + b"\r\n", stored)
            self.assertEqual((deliverer.batches, deliverer.messages), (1, 1))
            assert lmtp.spool is not None
            await lmtp.spool.idle()
            self.assertEqual(rows(os.path.join(data, SPOOL_FILE), "SELECT count(*) FROM spool"), [(0,)])

        return ensureDeferred(run())

    def test_pushed(self) -> Any:
        """
        The Email state of the account is published to the state
        listeners (push) once the filing process has filed the message.
        """

        async def run() -> None:
            server, lmtp, port = await self.start_lmtp(data=os.path.abspath(self.mktemp()), lmtp_spool=True)
            alice = server.add_account("alice", ("alice@example.com",))
            seen: list[dict[str, dict[str, int]]] = []
            server.env.state_listeners.append(seen.append)
            code, _ = await self.in_thread(self.deliver, port, "one")
            self.assertEqual(code, 250)
            await self.deliverer_of(lmtp).idle()
            self.assertTrue(any("Email" in changed.get(alice, {}) for changed in seen), seen)

        return ensureDeferred(run())

    def test_restartFilesOnce(self) -> Any:
        """
        A message acknowledged by a server that stops before filing it
        stays in the spool, and the next server on the same data
        directory files it, exactly once (a third start files nothing
        again).
        """

        async def run() -> None:
            data = os.path.abspath(self.mktemp())
            server, lmtp, port = await self.start_lmtp(data=data, lmtp_spool=True)
            first = self.deliverer_of(lmtp)
            # This server's deliverer files nothing.
            self.patch(first, "_kick", lambda: None)
            alice = server.add_account("alice", ("alice@example.com",))
            code, _ = await self.in_thread(self.deliver, port, "before")
            self.assertEqual(code, 250)
            self.assertEqual(self.stored(server, alice), [])
            await server.service.stopService()
            self.assertEqual(len(rows(os.path.join(data, SPOOL_FILE), "SELECT seq FROM spool")), 1)

            # The same database (on PostgreSQL, each server gets a new one).
            same = {"db_url": server.env.config.db_url} if server.env.config.db_url else {}
            again, lmtp, port = await self.start_lmtp(data=data, lmtp_spool=True, **same)
            second = self.deliverer_of(lmtp)
            await self.until(lambda: len(self.stored(again, alice)) > 0)
            await second.idle()
            code, _ = await self.in_thread(self.deliver, port, "after")
            self.assertEqual(code, 250)
            await second.idle()
            stored = self.stored(again, alice)
            self.assertEqual(len(stored), 2)
            self.assertIn(b"Subject: before", stored[0])
            self.assertIn(b"Subject: after", stored[1])
            await again.service.stopService()

            third, lmtp, _ = await self.start_lmtp(data=data, lmtp_spool=True, **same)
            last = self.deliverer_of(lmtp)
            await self.until(lambda: not last._recovering)
            await last.idle()
            self.assertEqual(len(self.stored(third, alice)), 2)
            self.assertEqual(rows(os.path.join(data, SPOOL_FILE), "SELECT count(*) FROM spool"), [(0,)])

        return ensureDeferred(run())

    test_restartFilesOnce.timeout = 60  # type: ignore[attr-defined]

    def test_stopTwice(self) -> Any:
        """
        Stopping the service a second time (as a test's cleanup does after
        a restart) returns, even though messages acknowledged before the
        first stop were left unfiled in the spool.
        """

        async def run() -> None:
            data = os.path.abspath(self.mktemp())
            server, lmtp, port = await self.start_lmtp(data=data, lmtp_spool=True)
            deliverer = self.deliverer_of(lmtp)
            self.patch(deliverer, "_kick", lambda: None)
            server.add_account("alice", ("alice@example.com",))
            code, _ = await self.in_thread(self.deliver, port, "before")
            self.assertEqual(code, 250)
            await server.service.stopService()
            stopped: list[Any] = []
            second = lmtp.stopService()
            if second is None:
                stopped.append(None)
            else:
                second.addBoth(stopped.append)
                await deferLater(reactor, 0.5, lambda: None)
            self.assertEqual(len(stopped), 1, "the second stopService never fires")

        return ensureDeferred(run())

    test_stopTwice.timeout = 20  # type: ignore[attr-defined]


class SpoolConfigTests(ConfigTestCase):
    """
    With C{lmtp-spool}, db-path holds the spool file.
    """

    def test_dataDirectoryUsedBySpool(self) -> None:
        """
        With db-url and blob-store database, db-path is checked when
        lmtp-spool is true (the spool is kept there), and not when it is
        false.
        """
        blocker = os.path.abspath(self.write(""))
        settings = f"db-path: {blocker}\ndb-url: postgresql://jmapd@db/jmapd\nblob-store: database\n"
        self.assertProblem(
            settings + "lmtp-spool: true\n",
            f"db-path: expected a directory jmapd can create or write to, got '{blocker}': it is not a directory",
        )
        self.assertEqual(self.load(settings + "lmtp-spool: false\n").db_path, blocker)
        self.assertTrue(self.load("lmtp-spool: true\n").lmtp_spool)
        self.assertFalse(self.load("").lmtp_spool)


pg.add_postgresql_variants(globals(), SpoolLMTPTests)
