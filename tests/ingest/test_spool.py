"""
Tests for L{jmapd.ingest.spool} and delivery with C{lmtp-spool}: a
message is acknowledged once it is durable in the spool, filed behind,
exactly once (L{jmapd.storage.spoolmark}), even across a restart, and a
copy that cannot be filed is held, never dropped.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Callable
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import Deferred, ensureDeferred, maybeDeferred
from twisted.internet.task import deferLater
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from jmapd.ingest.delivery import MAX_BATCH, RETRY_DELAY, Deliverer, Envelope, Reply
from jmapd.ingest.spool import SPOOL_FILE, Hold, Spool, SpoolRecord, read_held
from jmapd.storage import accounts, emails, spoolmark
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

    def open_spool(self, after: int = 0, run: Callable[..., Deferred[Any]] = run_now) -> tuple[Spool, str, list[SpoolRecord]]:
        """
        Start and open a spool on C{self.path} (with a C{run} that runs
        at once); the spool, its id and what it held after C{after}.
        """
        spool = Spool(self.path, run)
        self.addCleanup(lambda: spool.close() and None)
        spool_id = self.successResultOf(spool.start())
        records = self.successResultOf(spool.open(after))
        return spool, spool_id, records


class SpoolTests(SpoolTestCase):
    """
    The spool file on its own.
    """

    def test_appendDurableThenReopened(self) -> None:
        """
        Each append fires with a sequence number larger than the one
        before, only once its row is committed (another connection reads
        it when the Deferred fires); a spool opened anew on the same file
        returns every record as it was appended.
        """
        spool, _, records = self.open_spool()
        self.assertEqual(records, [])
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
        self.assertEqual(again, [SpoolRecord(seq, *row) for seq, row in zip(seqs, appended, strict=True)])

    def test_appendsGroupedWhileWriting(self) -> None:
        """
        An append fires only once the write that holds it has run; the
        appends made while a write runs wait for it, and are written
        together by the next one (one more job of the spool's thread).
        """
        threads = ManualThreads()
        spool = Spool(self.path, threads.run)
        self.addCleanup(lambda: spool.close() and None)
        started = spool.start()
        threads.drain()
        self.successResultOf(started)
        opened = spool.open(0)
        threads.drain()
        self.assertEqual(self.successResultOf(opened), [])

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
        C{open(after)} returns only the records after C{after} (those up
        to it are filed), and the filed ones are then deleted from the
        file.
        """
        spool, _, _ = self.open_spool()
        seqs = [self.successResultOf(spool.append(f"q{i}", float(i), b"{}", b"m%d" % i)) for i in range(4)]
        self.successResultOf(spool.close())

        spool, _, records = self.open_spool(after=seqs[1])
        self.assertEqual([record.seq for record in records], seqs[2:])
        self.assertEqual([record.message for record in records], [b"m2", b"m3"])
        self.successResultOf(spool.idle())
        self.assertEqual(rows(self.path, "SELECT seq FROM spool ORDER BY seq"), [(seq,) for seq in seqs[2:]])

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
        self.assertEqual(rows(self.path, "SELECT count(*) FROM spool"), [(0,)])
        self.successResultOf(spool.close())
        spool, _, _ = self.open_spool(after=first)
        self.assertGreater(self.successResultOf(spool.append("q2", 2.0, b"{}", b"two")), first)

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

    def test_hold(self) -> None:
        """
        A held record moves to the C{held} table with the envelope given
        (the recipients it was not filed for) and the reason; it is no
        longer returned by C{open}, and L{read_held} lists it with its
        message intact.
        """
        spool, _, _ = self.open_spool()
        first = self.successResultOf(spool.append("q1", 10.0, b'{"all": true}', b"one"))
        second = self.successResultOf(spool.append("q2", 20.0, b'{"all": true}', b"two"))
        spool.hold(Hold(first, b'{"failed": true}', "550 5.1.1 <carol@example.com>: its account no longer exists"))
        self.successResultOf(spool.idle())
        self.assertEqual(rows(self.path, "SELECT seq FROM spool"), [(second,)])
        self.successResultOf(spool.close())

        _, _, records = self.open_spool()
        self.assertEqual([record.seq for record in records], [second])
        (held,) = read_held(self.path)
        record, reason, held_at = held
        self.assertEqual(record, SpoolRecord(first, "q1", 10.0, b'{"failed": true}', b"one"))
        self.assertEqual(reason, "550 5.1.1 <carol@example.com>: its account no longer exists")
        self.assertGreater(held_at, 0)

    def test_readHeldWithoutSpool(self) -> None:
        """
        L{read_held} lists nothing when there is no spool file.
        """
        self.assertEqual(read_held(self.path), [])
        self.assertFalse(os.path.exists(self.path))

    def test_broken(self) -> None:
        """
        Once the spool is broken, every append fails, those waiting for
        it to open as well as those after.
        """
        spool = Spool(self.path, run_now)
        self.successResultOf(spool.start())
        waiting = spool.append("q1", 1.0, b"{}", b"one")
        self.assertNoResult(waiting)
        spool.broken(Failure(RuntimeError("the disk is gone")))
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
        self.failureResultOf(waiting, RuntimeError)
        self.failureResultOf(spool.append("q2", 2.0, b"{}", b"two"), RuntimeError)
        self.successResultOf(spool.close())

    def test_cannotStart(self) -> None:
        """
        A spool file that cannot be created makes C{start} fail and every
        append fail after.
        """
        spool = Spool(os.path.join(self.path, "no", "such", "directory", SPOOL_FILE), run_now)
        self.failureResultOf(spool.start(), sqlite3.OperationalError)
        self.assertEqual(len(self.flushLoggedErrors(sqlite3.OperationalError)), 1)
        self.failureResultOf(spool.append("q1", 1.0, b"{}", b"one"), sqlite3.OperationalError)


class SpooledDeliveryTestCase(DeliveryTestCase):
    """
    A L{Deliverer} with a spool (whose writes run at once) and filing in
    L{ManualThreads}, opened and recovered as the service does it.
    """

    def setUp(self) -> None:
        super().setUp()
        os.makedirs(self.env.config.db_path, exist_ok=True)
        self.spool_path = os.path.join(self.env.config.db_path, SPOOL_FILE)
        self.spool, self.deliverer = self.spooled()

    def spooled(self, backlog: int = MAX_BATCH, threads: ManualThreads | None = None) -> tuple[Spool, Deliverer]:
        """
        Open the spool (its writes run at once, or in C{threads}) and a
        Deliverer on it, and recover what the spool holds after the
        database's mark.
        """
        spool = Spool(self.spool_path, run_now if threads is None else threads.run)
        self.addCleanup(lambda: spool.close() and None)
        deliverer = Deliverer(
            self.env, self.resolver, "mx.example.com", run_filing=self.threads.run, spool=spool, backlog=backlog
        )

        def result(d: Deferred[Any]) -> Any:
            if threads is not None:
                threads.drain()
            return self.successResultOf(d)

        self.spool_id = result(spool.start())
        deliverer.use_spool_id(self.spool_id)
        filed, holds = self.env.database.run_sync(spoolmark.filed, self.spool_id)
        deliverer.recover(result(spool.open(filed, holds)))
        return spool, deliverer

    def mark(self) -> int:
        filed, _ = self.env.database.run_sync(spoolmark.filed, self.spool_id)
        return int(filed)

    def spooled_seqs(self, table: str = "spool") -> list[int]:
        return [seq for (seq,) in rows(self.spool_path, f"SELECT seq FROM {table} ORDER BY seq")]


class SpooledDeliveryTests(SpooledDeliveryTestCase):
    """
    Acknowledged once in the spool, filed behind it.
    """

    def test_acknowledgedBeforeFiling(self) -> None:
        """
        The 250 comes once the message is in the spool, before it is
        filed (the filing job has not run); once the job ran, the message
        is in the account (its Received field names the queue id the
        250 gave), the database's mark is its sequence number, and the
        spool no longer holds it.
        """
        alice = self.add_account("alice")
        answers = self.deliver(alice, "alice", "one")
        self.assertEqual(len(answers), 1)
        ((reply,),) = answers
        self.assertEqual(reply.code, 250)
        self.assertTrue(reply.text.startswith("2.0.0 <alice@example.com> queued as "), reply.text)
        queue_id = reply.text.rsplit(" ", 1)[1]
        self.assertEqual(self.threads.names(), ["file"])
        self.assertEqual(self.subjects(alice), [])
        (seq,) = self.spooled_seqs()
        self.assertEqual(self.mark(), 0)

        self.threads.next("file")
        self.assertEqual(self.subjects(alice), ["one"])
        self.assertEqual(self.mark(), seq)
        self.assertEqual(self.spooled_seqs(), [])
        self.assertEqual(answers, [[reply]])
        (row,) = self.env.database.run_sync(emails.get_rows, alice, None, ["blob_id"])
        stored = self.env.blobs.read(row["blob_id"])
        self.assertIn(f"with LMTP id {queue_id}\r\n".encode(), stored)
        self.assertTrue(stored.endswith(message(subject="one")))
        self.assertEqual((self.deliverer.batches, self.deliverer.messages), (1, 1))

    def test_nothingFiledBeforeRecover(self) -> None:
        """
        Before L{Deliverer.recover}, messages are acknowledged once in the
        spool but nothing is filed: what the spool held from before goes
        first.
        """
        alice = self.add_account("alice")
        spool = Spool(self.spool_path, run_now)
        self.addCleanup(lambda: spool.close() and None)
        self.deliverer = Deliverer(self.env, self.resolver, "mx.example.com", spool=spool)
        answers = self.deliver(alice, "alice", "one")
        self.assertEqual(answers, [])
        self.deliverer.use_spool_id(self.successResultOf(spool.start()))
        records = self.successResultOf(spool.open(0))
        self.assertEqual(answers[0][0].code, 250)
        self.assertEqual(self.threads.names(), [])
        self.deliverer.recover(records)
        self.threads.next("file")
        self.assertEqual(self.subjects(alice), ["one"])

    def test_backpressure(self) -> None:
        """
        With a backlog of one, the second message's 250 waits until the
        group before it is filed: acknowledgements do not run ahead of
        filing by more than the backlog.
        """
        self.spool, self.deliverer = self.spooled(backlog=1)
        alice = self.add_account("alice")
        first = self.deliver(alice, "alice", "one")
        self.assertEqual(first[0][0].code, 250)
        second = self.deliver(alice, "alice", "two")
        self.assertEqual(second, [])
        self.assertEqual(len(self.spooled_seqs()), 2)
        self.assertEqual(self.subjects(alice), [])
        self.threads.next("file")
        self.assertIn("one", self.subjects(alice))
        self.assertEqual(second[0][0].code, 250)
        self.threads.drain()
        self.assertEqual(self.subjects(alice), ["one", "two"])
        self.assertEqual(self.spooled_seqs(), [])

    def test_recoverAfterCrash(self) -> None:
        """
        After a crash, a new Deliverer files the records the spool holds
        after the database's mark, once; a record up to the mark (filed,
        its release not yet written to the spool) is not filed again.
        """
        alice = self.add_account("alice")
        # The release of filed records is never written before the "crash".
        self.patch(self.spool, "release", lambda upto: None)
        self.deliver(alice, "alice", "one")
        self.deliver(alice, "alice", "two")
        self.threads.next("file")
        self.assertEqual(self.subjects(alice), ["one", "two"])
        filed = self.spooled_seqs()
        self.assertEqual(len(filed), 2)
        self.assertEqual(self.mark(), filed[-1])
        # Acknowledged, never filed: the server stops filing first.
        self.successResultOf(self.deliverer.stop())
        late = self.deliver(alice, "alice", "three")
        self.assertEqual(late[0][0].code, 250)
        self.assertEqual(self.threads.names(), [])
        self.successResultOf(self.spool.close())

        self.spool, self.deliverer = self.spooled()
        self.assertEqual(self.threads.names(), ["file"])
        self.threads.drain()
        self.assertEqual(self.subjects(alice), ["one", "three", "two"])
        self.assertEqual(self.mark(), filed[-1] + 1)
        self.assertEqual(self.spooled_seqs(), [])

        # And again: nothing is filed twice by a third start.
        self.successResultOf(self.spool.close())
        self.spool, self.deliverer = self.spooled()
        self.assertEqual(self.threads.names(), [])
        self.assertEqual(self.subjects(alice), ["one", "three", "two"])

    def test_accountRemovedIsHeld(self) -> None:
        """
        A copy whose account was removed between RCPT and filing is held
        in the spool (with only that recipient and why), never dropped,
        while the other recipient of the same message gets it.
        """
        alice = self.add_account("alice")
        carol = self.add_account("carol")
        answers: list[list[Reply]] = []
        envelope = envelope_of(("alice@example.com", alice), ("carol@example.com", carol))
        self.deliverer.deliver(envelope, message(subject="both")).addCallback(answers.append)
        self.assertEqual([reply.code for reply in answers[0]], [250, 250])
        (seq,) = self.spooled_seqs()
        self.env.database.run_sync(accounts.remove_account, "carol", write=True)
        self.threads.next("file")
        self.assertEqual(self.subjects(alice), ["both"])
        self.assertEqual(self.spooled_seqs(), [])
        self.assertEqual(self.spooled_seqs("held"), [seq])
        (held,) = read_held(self.spool_path)
        record, reason, _ = held
        self.assertEqual(record.seq, seq)
        self.assertEqual(record.message, message(subject="both"))
        self.assertEqual(Envelope.from_bytes(record.envelope).recipients, (("carol@example.com", carol),))
        self.assertIn("550", reason)
        self.assertIn("carol@example.com", reason)
        self.assertIn("no longer exists", reason)
        self.assertEqual(self.mark(), seq)
        # A restart files nothing of it again, and it stays held.
        self.successResultOf(self.spool.close())
        self.spool, self.deliverer = self.spooled()
        self.assertEqual(self.threads.names(), [])
        self.assertEqual(self.subjects(alice), ["both"])
        self.assertEqual(self.spooled_seqs("held"), [seq])

    def test_filingFailureIsHeld(self) -> None:
        """
        A copy whose filing raised is held in the spool (451 as the
        reason), while the other messages of the group are filed.
        """
        alice = self.add_account("alice")
        self.fail_filing("two")
        for subject in ("one", "two", "three"):
            self.deliver(alice, "alice", subject)
        seqs = self.spooled_seqs()
        self.threads.drain()
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
        self.assertEqual(self.subjects(alice), ["one", "three"])
        self.assertEqual(self.spooled_seqs(), [])
        self.assertEqual(self.spooled_seqs("held"), [seqs[1]])
        ((record, reason, _),) = read_held(self.spool_path)
        self.assertEqual(record.message, message(subject="two"))
        self.assertIn("451", reason)

    def test_heldDespiteCrashAfterFiling(self) -> None:
        """
        A copy that could not be filed is not lost when the server
        crashes after the filing transaction committed and before the
        spool wrote the hold: after the restart it is still held (or
        filed), not deleted with the records up to the mark.
        """
        alice = self.add_account("alice")
        carol = self.add_account("carol")
        spool_threads = ManualThreads()
        self.successResultOf(self.spool.close())
        self.spool, self.deliverer = self.spooled(threads=spool_threads)
        spool_threads.drain()
        answers: list[list[Reply]] = []
        envelope = envelope_of(("alice@example.com", alice), ("carol@example.com", carol))
        self.deliverer.deliver(envelope, message(subject="both")).addCallback(answers.append)
        spool_threads.drain()
        self.assertEqual([reply.code for reply in answers[0]], [250, 250])
        self.env.database.run_sync(accounts.remove_account, "carol", write=True)
        self.threads.next("file")
        self.assertEqual(self.subjects(alice), ["both"])
        # The crash: the spool's write of the hold (and release) never runs.
        self.assertEqual(spool_threads.names(), ["_write"])
        spool_threads.jobs.clear()
        self.spool._connection.close()  # type: ignore[union-attr]

        self.spool, self.deliverer = self.spooled()
        self.threads.drain()
        self.assertEqual(self.subjects(alice), ["both"])
        held = [record.seq for record, _, _ in read_held(self.spool_path)]
        spooled = self.spooled_seqs()
        self.assertEqual(len(held) + len(spooled), 1, "the copy for carol was dropped")

    def test_transactionFailsThenRetried(self) -> None:
        """
        When a filing transaction fails as a whole, its messages stay
        queued and in the spool (their 250 was given: no 451 follows);
        the transaction is tried again RETRY_DELAY later, with what
        arrived meanwhile, and they are filed.
        """
        alice = self.add_account("alice")
        failing = self.fail_commits()
        first = self.deliver(alice, "alice", "one")
        self.threads.next("file")
        self.assertEqual(len(self.flushLoggedErrors(sqlite3.OperationalError)), 1)
        failing.restore()
        self.assertEqual(self.subjects(alice), [])
        self.assertEqual(len(self.spooled_seqs()), 1)
        self.assertEqual(self.mark(), 0)
        self.assertEqual(self.threads.names(), [])
        second = self.deliver(alice, "alice", "two")
        self.assertEqual(self.threads.names(), [])
        self.env.clock.advance(RETRY_DELAY - 0.5)
        self.assertEqual(self.threads.names(), [])
        self.env.clock.advance(0.5)
        self.assertEqual(self.threads.names(), ["file"])
        self.threads.next("file")
        self.assertEqual(self.subjects(alice), ["one", "two"])
        self.assertEqual([[reply.code for reply in answer] for answer in first + second], [[250], [250]])
        self.assertEqual(self.spooled_seqs(), [])
        self.assertEqual(self.deliverer.batches, 1)

    def test_stopKeepsRetryWaiting(self) -> None:
        """
        Once stopped, the Deliverer files nothing more, not even the retry
        of a failed transaction: its messages stay in the spool.
        """
        alice = self.add_account("alice")
        failing = self.fail_commits()
        self.deliver(alice, "alice", "one")
        self.threads.next("file")
        self.flushLoggedErrors(sqlite3.OperationalError)
        failing.restore()
        self.successResultOf(self.deliverer.stop())
        self.env.clock.advance(RETRY_DELAY * 2)
        self.assertEqual(self.threads.names(), [])
        self.assertEqual(self.subjects(alice), [])
        self.assertEqual(len(self.spooled_seqs()), 1)

    def test_spoolCannotOpen(self) -> None:
        """
        When the spool cannot be opened, a message gets 451 for each
        recipient and nothing is filed.
        """
        alice = self.add_account("alice")
        spool = Spool(os.path.join(self.spool_path, "no", "such", SPOOL_FILE), run_now)
        self.deliverer = Deliverer(self.env, self.resolver, "mx.example.com", spool=spool)
        self.failureResultOf(spool.start(), sqlite3.OperationalError)
        self.flushLoggedErrors(sqlite3.OperationalError)
        answers = self.deliver(alice, "alice", "one")
        self.assertEqual([reply.code for reply in answers[0]], [451])
        self.assertEqual(self.threads.names(), [])


class SpoolLMTPTests(LMTPTestCase):
    """
    LMTP delivery end to end with C{lmtp-spool: true}.
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
    def deliverer_of(lmtp: Any) -> Deliverer:
        deliverer = lmtp.deliverer
        assert isinstance(deliverer, Deliverer)
        return deliverer

    async def until(self, predicate: Callable[[], bool], timeout: float = 15.0) -> None:
        waited = 0.0
        while not predicate():
            if waited > timeout:
                raise AssertionError("timed out")
            await deferLater(reactor, 0.02, lambda: None)
            waited += 0.02

    def test_delivered(self) -> Any:
        """
        A message delivered over LMTP gets 250 ("queued as") and is an
        Email of the account once the Deliverer is idle; the spool file
        is under db-path.
        """

        async def run() -> None:
            data = os.path.abspath(self.mktemp())
            server, lmtp, port = await self.start_lmtp(data=data, lmtp_spool=True)
            alice = server.add_account("alice", ("alice@example.com",))
            code, text = await self.in_thread(self.deliver, port, "one")
            self.assertEqual(code, 250)
            self.assertTrue(text.startswith(b"2.0.0 <alice@example.com> queued as "), text)
            await self.deliverer_of(lmtp).idle()
            (stored,) = self.stored(server, alice)
            self.assertTrue(stored.endswith(message(subject="one")))
            self.assertTrue(os.path.exists(os.path.join(data, SPOOL_FILE)))

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
            # This server's Deliverer files nothing.
            self.patch(first, "_kick", lambda: None)
            alice = server.add_account("alice", ("alice@example.com",))
            code, _ = await self.in_thread(self.deliver, port, "before")
            self.assertEqual(code, 250)
            self.assertEqual(self.stored(server, alice), [])
            await server.service.stopService()
            self.assertEqual(len(rows(os.path.join(data, SPOOL_FILE), "SELECT seq FROM spool")), 1)

            again, lmtp, port = await self.start_lmtp(data=data, lmtp_spool=True)
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

            third, lmtp, _ = await self.start_lmtp(data=data, lmtp_spool=True)
            last = self.deliverer_of(lmtp)
            await self.until(lambda: not last._recovering)
            await last.idle()
            self.assertEqual(len(self.stored(third, alice)), 2)
            self.assertEqual(rows(os.path.join(data, SPOOL_FILE), "SELECT count(*) FROM spool"), [(0,)])

        return ensureDeferred(run())

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
