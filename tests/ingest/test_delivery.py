"""
Tests for L{jmapd.ingest.delivery}: group commit, and no reply before the
transaction that files a message has committed.

The worker threads are replaced by L{ManualThreads}, which runs each job
in the test's thread when the test says so: that is how a test holds a
transaction "in progress" while more messages arrive.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Callable
from typing import Any

import attrs
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from jmapd.blobs.database import DatabaseBlobStore
from jmapd.blobs.store import FileBlobStore
from jmapd.blobs.writeback import WriteBackBlobStore
from jmapd.config import default_config
from jmapd.environment import Environment
from jmapd.ingest.delivery import Deliverer, Envelope, Reply, inbox_of
from jmapd.ingest.recipients import RecipientResolver
from jmapd.storage import accounts, emails, mailboxes, open_database
from jmapd.util.tticache import TTICache
from tests.ingest.support import message


class ManualThreads:
    """
    A stand-in for the worker pool whose jobs run when the test calls
    L{step} (C{run(fn, *args) -> Deferred}, like the pool's).
    """

    def __init__(self) -> None:
        self.jobs: list[tuple[Callable[..., Any], tuple[Any, ...], Deferred[Any]]] = []

    def run(self, fn: Callable[..., Any], *args: Any) -> Deferred[Any]:
        d: Deferred[Any] = Deferred()
        self.jobs.append((fn, args, d))
        return d

    def step(self, index: int = 0) -> None:
        fn, args, d = self.jobs.pop(index)
        try:
            result = fn(*args)
        except BaseException:
            d.errback(Failure())
        else:
            d.callback(result)

    def names(self) -> list[str]:
        """
        What the queued jobs are, in order: C{"file"} (a group's job:
        prepare and file its messages) or C{"transaction"}.
        """
        kinds = {"_deliver_group": "file", "_transaction": "transaction"}
        return [kinds.get(fn.__name__, fn.__name__) for fn, _, _ in self.jobs]

    def next(self, name: str) -> None:
        """
        Run the first queued job of kind C{name} (see L{names}).
        """
        self.step(self.names().index(name))

    def drain(self) -> None:
        """
        Run jobs, oldest first, until none is left.
        """
        while self.jobs:
            self.step()

    def fail(self, index: int = 0) -> None:
        _, _, d = self.jobs.pop(index)
        d.errback(Failure(RuntimeError("the transaction failed")))


class DeliveryTestCase(SynchronousTestCase):
    def setUp(self) -> None:
        data = os.path.abspath(self.mktemp())
        self.threads = ManualThreads()
        config = default_config(db_path=data)
        database = open_database(config, self.threads.run)
        self.addCleanup(database.close)
        self.env = Environment(
            config=config,
            registry=None,
            database=database,
            blobs=WriteBackBlobStore(
                FileBlobStore(os.path.join(data, "blobs")), DatabaseBlobStore(database, shared=True)
            ),
            clock=Clock(),
            workers=self.threads,
        )
        self.resolver = RecipientResolver(database, TTICache(self.env.clock, 0, name="recipients"))
        self.deliverer = Deliverer(self.env, self.resolver, "mx.example.com")

    def add_account(self, name: str) -> str:
        account = self.env.database.run_sync(
            accounts.add_account, name, None, [f"{name}@example.com"], write=True
        )
        return str(account.id)

    def deliver(
        self, account_id: str, name: str, subject: str, answers: list[list[Reply]] | None = None
    ) -> list[list[Reply]]:
        """
        Deliver a message to C{name}; its answers arrive in the list
        returned (or C{answers}).
        """
        answers = [] if answers is None else answers
        envelope = Envelope("bob@example.org", ((f"{name}@example.com", account_id),), "mta", "127.0.0.1")
        self.deliverer.deliver(envelope, message(subject=subject)).addCallback(answers.append)
        return answers

    def fail_filing(self, subject: str) -> None:
        """
        Make filing the message with C{subject} fail half-way, after its
        Email was written in the transaction.
        """
        real_ingest = emails.IngestBatch.ingest

        def ingest(batch: emails.IngestBatch, account_id: str, prepared: Any, *args: Any) -> Any:
            created = real_ingest(batch, account_id, prepared, *args)
            if prepared.record.subject == subject:
                raise RuntimeError("filing failed half-way")
            return created

        self.patch(emails.IngestBatch, "ingest", ingest)

    def fail_commits(self) -> Any:
        """
        Make every commit fail as a disk error would, until the returned
        patcher is restored.
        """

        def commit(conn: Any) -> None:
            raise sqlite3.OperationalError("disk I/O error")

        return self.patch(self.env.database.engine, "commit", commit)

    def count(self, sql: str) -> int:
        return int(self.env.database.run_sync(lambda txn: txn.fetchvalue(sql)))

    def subjects(self, account_id: str) -> list[str]:
        rows = self.env.database.run_sync(emails.get_rows, account_id, None, ["subject"])
        return sorted(row["subject"] for row in rows)


class GroupCommitTests(DeliveryTestCase):
    """
    Messages that arrive while a group is filed join its transaction,
    and each is answered only after that commit.
    """

    def arrive_while_filing(self, account_id: str, trigger: str, subject: str) -> list[list[Reply]]:
        """
        Make a message with C{subject} arrive while the message with
        C{trigger} is being filed (as the reactor thread would take one in
        while the filing thread works); its answers are returned.
        """
        answers: list[list[Reply]] = []
        real_ingest = emails.IngestBatch.ingest
        arrived: list[bool] = []

        def ingest(batch: emails.IngestBatch, account_id_: str, prepared: Any, *args: Any) -> Any:
            # Once: a transaction run again does not make more mail arrive.
            if prepared.record.subject == trigger and not arrived:
                arrived.append(True)
                self.deliver(account_id, "alice", subject, answers)
            return real_ingest(batch, account_id_, prepared, *args)

        self.patch(emails.IngestBatch, "ingest", ingest)
        return answers

    def test_batches(self) -> None:
        """
        Messages received while no group is being filed wait for one job
        and are filed in one transaction; none is answered before it has
        committed.
        """
        alice = self.add_account("alice")
        answers = [self.deliver(alice, "alice", subject) for subject in ("one", "two", "three")]
        self.assertEqual(self.threads.names(), ["file"])
        self.assertEqual(answers, [[], [], []])
        self.assertEqual(self.subjects(alice), [])
        self.threads.next("file")
        self.assertEqual([answer[0][0].code for answer in answers], [250, 250, 250])
        self.assertEqual((self.deliverer.batches, self.deliverer.messages), (1, 3))
        self.assertEqual(self.subjects(alice), ["one", "three", "two"])
        self.assertEqual(self.threads.names(), [])
        self.assertFalse(self.deliverer.busy)

    def test_takenInBeforeCommit(self) -> None:
        """
        A message that arrives while a group is being filed is taken into
        that group's transaction before it commits (rather than waiting
        for the commit and having one of its own), and is answered with
        the group.
        """
        alice = self.add_account("alice")
        late = self.arrive_while_filing(alice, "one", "two")
        first = self.deliver(alice, "alice", "one")
        self.threads.next("file")
        self.assertEqual([first[0][0].code, late[0][0].code], [250, 250])
        self.assertEqual((self.deliverer.batches, self.deliverer.messages), (1, 2))
        self.assertEqual(self.threads.names(), [])
        self.assertEqual(self.subjects(alice), ["one", "two"])

    def test_maxBatch(self) -> None:
        """
        A group holds at most C{max_batch} messages, those that arrive
        while it is filed included; the rest wait for the next one.
        """
        self.deliverer = Deliverer(self.env, self.resolver, "mx.example.com", max_batch=2)
        alice = self.add_account("alice")
        late = self.arrive_while_filing(alice, "one", "three")
        answers = [self.deliver(alice, "alice", subject) for subject in ("one", "two")]
        self.threads.next("file")
        self.assertEqual([answer[0][0].code for answer in answers], [250, 250])
        self.assertEqual(late, [])
        self.assertEqual(self.threads.names(), ["file"])
        self.threads.next("file")
        self.assertEqual(late[0][0].code, 250)
        self.assertEqual((self.deliverer.batches, self.deliverer.messages), (2, 3))

    def test_stagedWithTheGroup(self) -> None:
        """
        The bytes of every message of a group, those taken in while it was
        filed included, are staged by the group's one transaction (rows of
        blob_data, durable with its commit, none before it runs), and no
        blob file is written during delivery.
        """
        alice = self.add_account("alice")
        late = self.arrive_while_filing(alice, "one", "three")
        answers = [self.deliver(alice, "alice", subject) for subject in ("one", "two")]
        self.assertEqual(self.count("SELECT count(*) FROM blob_data"), 0)
        self.threads.next("file")
        self.assertEqual([answer[0][0].code for answer in answers + [late]], [250, 250, 250])
        self.assertEqual(self.deliverer.batches, 1)
        rows = self.env.database.run_sync(emails.get_rows, alice, None, ["blob_id"])
        staged = self.env.database.run_sync(lambda txn: txn.fetchall("SELECT blob_id FROM blob_data"))
        self.assertEqual(sorted(row[0] for row in staged), sorted(row["blob_id"] for row in rows))
        self.assertEqual(len(rows), 3)
        files = [name for _, _, names in os.walk(self.env.blobs.files.root) for name in names]
        self.assertEqual(files, [])

    def test_failedTransaction(self) -> None:
        """
        When the filing job fails, every recipient of every message in it
        gets 451 4.3.0 (the MTA will try again), and the queue goes on
        with the next messages.
        """
        alice = self.add_account("alice")
        first = self.deliver(alice, "alice", "one")
        self.threads.fail()
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
        self.assertEqual(first, [[Reply(451, "4.3.0 Temporary local failure, try again later")]])
        second = self.deliver(alice, "alice", "two")
        self.threads.drain()
        self.assertEqual(second[0][0].code, 250)
        self.assertEqual(self.subjects(alice), ["two"])

    def test_commitFails(self) -> None:
        """
        When the commit of a group fails, none of its messages is
        acknowledged with 250 (each recipient gets 451) and none of them
        left a row: no Email, no blob record, no change.
        """
        alice = self.add_account("alice")
        bob = self.add_account("bob")
        changes_before = self.count("SELECT count(*) FROM changelog")
        failing = self.fail_commits()
        first = self.deliver(alice, "alice", "one")
        self.threads.next("file")
        self.assertEqual(len(self.flushLoggedErrors(sqlite3.OperationalError)), 1)
        self.assertEqual(first[0][0].code, 451)
        second = self.deliver(alice, "alice", "two")
        third = self.deliver(bob, "bob", "three")
        self.threads.next("file")
        self.assertEqual(len(self.flushLoggedErrors(sqlite3.OperationalError)), 1)
        self.assertEqual([second[0][0].code, third[0][0].code], [451, 451])
        self.assertEqual((self.deliverer.batches, self.deliverer.messages), (0, 0))
        failing.restore()
        self.assertEqual(self.count("SELECT count(*) FROM emails"), 0)
        self.assertEqual(self.count("SELECT count(*) FROM blobs"), 0)
        self.assertEqual(self.count("SELECT count(*) FROM changelog"), changes_before)
        fourth = self.deliver(alice, "alice", "four")
        self.threads.drain()
        self.assertEqual(fourth[0][0].code, 250)
        self.assertEqual(self.subjects(alice), ["four"])

    def test_retriedAfterConcurrentLoss(self) -> None:
        """
        When the filing transaction loses to a concurrent one (PostgreSQL:
        a deadlock) and is run again, every message of the group, those
        taken in during the lost attempt included, is filed once and
        answered 250.
        """
        alice = self.add_account("alice")
        engine = self.env.database.engine
        real_commit = engine.commit
        lost: list[bool] = []

        class Lost(Exception):
            pass

        def commit(conn: Any) -> None:
            if not lost:
                lost.append(True)
                raise Lost("lost to a concurrent transaction")
            real_commit(conn)

        self.patch(engine, "commit", commit)
        self.patch(engine, "is_transient", lambda error: isinstance(error, Lost))
        late = self.arrive_while_filing(alice, "one", "three")
        answers = [self.deliver(alice, "alice", subject) for subject in ("one", "two")]
        self.threads.next("file")
        self.assertEqual(lost, [True])
        self.assertEqual([answer[0][0].code for answer in answers + [late]], [250, 250, 250])
        self.assertEqual((self.deliverer.batches, self.deliverer.messages), (1, 3))
        self.assertEqual(self.subjects(alice), ["one", "three", "two"])
        self.assertEqual(self.count("SELECT count(*) FROM email_fts"), 3)
        self.assertEqual(self.count("SELECT sum(total_emails) FROM mailboxes"), 3)

    def test_countsOncePerGroup(self) -> None:
        """
        A transaction filing several messages changes each account's
        Mailbox counts and EmailDelivery state once, not once per
        message: the account's modseq grows by two per Email (its Thread
        and itself) and by two per filing transaction, and the counts are
        those of every Email filed.
        """
        alice = self.add_account("alice")
        bob = self.add_account("bob")

        def modseqs() -> tuple[int, int]:
            return (
                self.count(f"SELECT modseq FROM accounts WHERE id = '{alice}'"),
                self.count(f"SELECT modseq FROM accounts WHERE id = '{bob}'"),
            )

        before = modseqs()
        answers = [
            self.deliver(alice, "alice", "one"),
            self.deliver(alice, "alice", "two"),
            self.deliver(alice, "alice", "three"),
            self.deliver(bob, "bob", "four"),
        ]
        self.threads.drain()
        self.assertEqual([answer[0][0].code for answer in answers], [250, 250, 250, 250])
        self.assertEqual(self.deliverer.batches, 1)
        after = modseqs()
        self.assertEqual((after[0] - before[0], after[1] - before[1]), (3 * 2 + 2, 2 + 2))

        def inbox_counts(account_id: str) -> tuple[int, int, int, int]:
            def read(txn: Any) -> tuple[int, int, int, int]:
                return mailboxes.get_counts(txn, account_id, mailboxes.find_by_role(txn, account_id, "inbox"))

            return self.env.database.run_sync(read)

        self.assertEqual(inbox_counts(alice), (3, 3, 3, 3))
        self.assertEqual(inbox_counts(bob), (1, 1, 1, 1))

    def test_failedRecipientUndone(self) -> None:
        """
        When filing one message of a group fails, that recipient gets
        451 and nothing of its Email is left (row, counts, search index
        entry), while the others of the group are filed and counted.
        """
        alice = self.add_account("alice")
        self.fail_filing("two")
        answers = [self.deliver(alice, "alice", subject) for subject in ("one", "two", "three")]
        self.threads.next("file")
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
        self.assertEqual([answer[0][0].code for answer in answers], [250, 451, 250])
        self.assertEqual(self.deliverer.batches, 1)
        self.assertEqual(self.subjects(alice), ["one", "three"])
        self.assertEqual(self.count("SELECT count(*) FROM email_fts"), 2)
        self.assertEqual(self.count("SELECT count(*) FROM email_search"), 2)
        self.assertEqual(self.count("SELECT count(*) FROM mailbox_threads"), 2)
        self.assertEqual(self.count("SELECT count(*) FROM threads"), 2)
        self.assertEqual(self.count("SELECT sum(total_emails) FROM mailboxes"), 2)
        self.assertEqual(self.count("SELECT sum(total_threads) FROM mailboxes"), 2)

    def test_idle(self) -> None:
        """
        L{Deliverer.idle} fires once nothing is waiting or being filed.
        """
        alice = self.add_account("alice")
        self.deliver(alice, "alice", "one")
        idle: list[None] = []
        self.deliverer.idle().addCallback(idle.append)
        self.assertEqual(idle, [])
        self.threads.next("file")
        self.assertEqual(idle, [None])


class InboxTests(DeliveryTestCase):
    """
    Where delivered mail goes when the account has no Inbox role.
    """

    def test_inboxRole(self) -> None:
        """
        The Mailbox with the inbox role is the Inbox.
        """
        alice = self.add_account("alice")
        inbox = self.env.database.run_sync(mailboxes.find_by_role, alice, "inbox")
        self.assertEqual(self.env.database.run_sync(inbox_of, alice, write=True), inbox)

    def test_roleGivenBack(self) -> None:
        """
        Without a Mailbox with the inbox role, a top-level Mailbox named
        Inbox gets the role back.
        """
        alice = self.add_account("alice")

        def drop_role(txn: Any) -> str:
            inbox = mailboxes.get_mailbox(txn, alice, mailboxes.find_by_role(txn, alice, "inbox"))
            assert inbox is not None
            mailboxes.update_mailbox(txn, alice, mailboxes.Mailbox(inbox.id, "Inbox", None, None, 10, True))
            return inbox.id

        inbox = self.env.database.run_sync(drop_role, write=True)
        self.assertEqual(self.env.database.run_sync(inbox_of, alice, write=True), inbox)
        self.assertEqual(self.env.database.run_sync(mailboxes.find_by_role, alice, "inbox"), inbox)

    def test_inboxCreated(self) -> None:
        """
        Without any Inbox, one is created with the inbox role.
        """
        alice = self.add_account("alice")

        def remove(txn: Any) -> None:
            mailboxes.destroy_mailbox(txn, alice, mailboxes.find_by_role(txn, alice, "inbox"), True)

        self.env.database.run_sync(remove, write=True)
        created = self.env.database.run_sync(inbox_of, alice, write=True)
        mailbox = self.env.database.run_sync(mailboxes.get_mailbox, alice, created)
        self.assertEqual((mailbox.name, mailbox.role, mailbox.parent_id), ("Inbox", "inbox", None))


    def test_inboxNameTakenByAnotherRole(self) -> None:
        """
        When the top-level Mailbox named Inbox has another role, the Inbox
        created for delivery gets a name no sibling has: two top-level
        Mailboxes must not share a name (RFC 8621 section 2), and the
        other Mailbox keeps its one role.
        """
        alice = self.add_account("alice")

        def give_inbox_another_role(txn: Any) -> str:
            inbox = mailboxes.get_mailbox(txn, alice, mailboxes.find_by_role(txn, alice, "inbox"))
            assert inbox is not None
            mailboxes.update_mailbox(txn, alice, mailboxes.Mailbox(inbox.id, "Inbox", None, "important", 10, True))
            return inbox.id

        old = self.env.database.run_sync(give_inbox_another_role, write=True)
        created = self.env.database.run_sync(inbox_of, alice, write=True)
        self.assertNotEqual(created, old)
        found = self.env.database.run_sync(mailboxes.get_mailboxes, alice)
        top_level = [m.name for m in found if m.parent_id is None]
        self.assertEqual(len(top_level), len(set(top_level)), top_level)
        by_id = {m.id: m for m in found}
        self.assertEqual((by_id[created].name, by_id[created].role), ("Inbox 2", "inbox"))
        self.assertEqual(by_id[old].role, "important")

class InTransactionTests(DeliveryTestCase):
    """
    With the database blob store (on SQLite), each copy's bytes are
    written by the filing transaction itself: there is no sync step, and
    the bytes are durable exactly when the Email is.
    """

    def setUp(self) -> None:
        super().setUp()
        self.env = attrs.evolve(self.env, blobs=DatabaseBlobStore(self.env.database, shared=True))
        self.deliverer = Deliverer(self.env, self.resolver, "mx.example.com")

    def test_filedWithItsBytes(self) -> None:
        """
        The blob of the Email is a row of blob_data written by the filing
        transaction (none before it runs), holding the message as
        delivered, with no sync of any file, and nothing is written under
        the blobs directory.
        """
        alice = self.add_account("alice")

        def sync(written: Any) -> None:
            raise AssertionError("a sync with the database store")

        self.patch(self.env.blobs, "sync", sync)
        answers = self.deliver(alice, "alice", "one")
        self.assertEqual(self.threads.names(), ["file"])
        self.assertEqual(self.count("SELECT count(*) FROM blob_data"), 0)
        self.threads.next("file")
        self.assertEqual(answers[0][0].code, 250)
        (row,) = self.env.database.run_sync(emails.get_rows, alice, None, ["blob_id"])
        stored = self.env.blobs.read(row["blob_id"])
        self.assertTrue(stored.startswith(b"Return-Path: <bob@example.org>\r\n"))
        self.assertTrue(stored.endswith(message(subject="one")))
        self.assertEqual(self.count("SELECT count(*) FROM blob_data"), 1)
        files = [name for _, _, names in os.walk(os.path.join(self.env.config.db_path, "blobs")) for name in names]
        self.assertEqual(files, [])

    def test_bytesWrittenUnderBlobLock(self) -> None:
        """
        A copy's bytes are written after its blob's lock is taken (by the
        Email's blob row, until the commit): bytes found already stored,
        and so not written again, cannot be deleted as unreferenced
        (expire_blobs, on PostgreSQL in a concurrent transaction) before
        the Email referring to them commits.
        """
        alice = self.add_account("alice")
        events: list[str] = []
        engine = self.env.database.engine
        real_lock = engine.lock_blob
        real_write_in = DatabaseBlobStore.write_in

        def lock_blob(txn: Any, blob_id: str) -> None:
            events.append("lock")
            real_lock(txn, blob_id)

        def write_in(store: DatabaseBlobStore, txn: Any, data: bytes) -> str:
            events.append("write")
            return real_write_in(store, txn, data)

        self.patch(engine, "lock_blob", lock_blob)
        self.patch(DatabaseBlobStore, "write_in", write_in)
        self.deliverer = Deliverer(self.env, self.resolver, "mx.example.com")
        answers = self.deliver(alice, "alice", "one")
        self.threads.next("file")
        self.assertEqual(answers[0][0].code, 250)
        self.assertEqual(events, ["lock", "write"])

    def test_commitFails(self) -> None:
        """
        When the commit of a group fails, each recipient gets 451 and
        neither the Emails nor their bytes are stored.
        """
        alice = self.add_account("alice")
        failing = self.fail_commits()
        answers = [self.deliver(alice, "alice", subject) for subject in ("one", "two")]
        self.threads.drain()
        self.assertEqual(len(self.flushLoggedErrors(sqlite3.OperationalError)), 1)
        self.assertEqual([answer[0][0].code for answer in answers], [451, 451])
        failing.restore()
        self.assertEqual(self.count("SELECT count(*) FROM emails"), 0)
        self.assertEqual(self.count("SELECT count(*) FROM blob_data"), 0)
        self.assertEqual(self.count("SELECT count(*) FROM blob_chunks"), 0)

    def test_failedRecipientUndone(self) -> None:
        """
        When filing one message of a group fails, its bytes are undone
        with its Email, and the others of the group keep theirs.
        """
        alice = self.add_account("alice")
        self.fail_filing("two")
        answers = [self.deliver(alice, "alice", subject) for subject in ("one", "two", "three")]
        self.threads.drain()
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
        self.assertEqual([answer[0][0].code for answer in answers], [250, 451, 250])
        rows = self.env.database.run_sync(emails.get_rows, alice, None, ["blob_id"])
        stored = self.env.database.run_sync(lambda txn: txn.fetchall("SELECT blob_id FROM blob_data"))
        self.assertEqual(sorted(row[0] for row in stored), sorted(row["blob_id"] for row in rows))
        self.assertEqual(len(rows), 2)
