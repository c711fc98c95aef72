"""
Tests for L{jmapd.push.pgnotify}: the payloads, and two notifiers on one
PostgreSQL database telling each other about their commits through
LISTEN/NOTIFY (skipped without PostgreSQL, as L{tests.pg} says).
"""

from __future__ import annotations

from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import Deferred, DeferredQueue, ensureDeferred
from twisted.internet.task import Clock
from twisted.logger import globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase, TestCase
from zope.interface.verify import verifyObject

from jmapd.push import pgnotify
from jmapd.push.notifier import INotifier
from jmapd.push.pgnotify import PostgresNotifier, decode_notification, encode_notifications
from jmapd.storage import accounts, changelog
from jmapd.storage.database import Database
from jmapd.storage.engines.postgres import PostgreSQLEngine
from jmapd.storage.ids import new_id
from jmapd.workers import WorkerPoolService
from tests import pg


class PayloadTests(SynchronousTestCase):
    def test_roundTrip(self) -> None:
        """
        A small change is one payload that decodes to the sender and the
        states sent.
        """
        changed = {"a1": {"Email": 7, "Mailbox": 5}, "a2": {"Thread": 3}}
        (payload,) = encode_notifications("node-a", "node-a/x1", changed)
        notification = decode_notification(payload)
        assert notification is not None
        self.assertEqual(
            (notification.node, notification.sender, notification.changed, notification.accounts),
            ("node-a", "node-a/x1", changed, ()),
        )

    def test_subscriptionsChanged(self) -> None:
        """
        Accounts whose PushSubscriptions changed travel in payloads of
        their own (a commit may change nothing else), within the limit.
        """
        accounts = [f"a{n:04d}" for n in range(40)]
        payloads = encode_notifications("node-a", "node-a/x1", {}, 120, subscriptions=accounts)
        self.assertGreater(len(payloads), 1)
        found: list[str] = []
        for payload in payloads:
            self.assertLessEqual(len(payload), 120)
            notification = decode_notification(payload)
            assert notification is not None
            self.assertEqual(notification.changed, {})
            found.extend(notification.subscriptions)
        self.assertEqual(found, accounts)

    def test_splitByAccount(self) -> None:
        """
        Many accounts are spread over several payloads, each within the
        limit, which together carry every state.
        """
        changed = {f"account{i:04d}": {"Email": i, "Mailbox": i + 1} for i in range(1000)}
        payloads = encode_notifications("n", "n/1", changed)
        self.assertGreater(len(payloads), 1)
        self.assertTrue(all(len(p) < 8000 for p in payloads), [len(p) for p in payloads])
        merged: dict[str, dict[str, int]] = {}
        for payload in payloads:
            notification = decode_notification(payload)
            assert notification is not None
            self.assertEqual(notification.accounts, ())
            merged.update(notification.changed)
        self.assertEqual(merged, changed)

    def test_tooLargeByIdOnly(self) -> None:
        """
        An account whose states alone exceed the limit is announced by id
        only, and the others as usual.
        """
        changed = {"big": {f"Type{i}": i for i in range(20)}, "small": {"Email": 1}}
        payloads = encode_notifications("n", "n/1", changed, limit=120)
        self.assertTrue(all(len(p) <= 120 for p in payloads), payloads)
        decoded = [decode_notification(p) for p in payloads]
        self.assertEqual(
            [(d.changed, d.accounts) for d in decoded if d is not None],
            [({"small": {"Email": 1}}, ()), ({}, ("big",))],
        )

    def test_orderKept(self) -> None:
        """
        Accounts keep their order, within a payload and across payloads,
        so a commit's sharing change can go first on every node.
        """
        changed = {f"z{i}": {"Email": i} for i in range(30)} | {"a": {"ShareNotification": 99}}
        payloads = encode_notifications("n", "n/1", changed, limit=200)
        self.assertGreater(len(payloads), 1)
        order = [a for p in payloads for a in decode_notification(p).changed]  # type: ignore[union-attr]
        self.assertEqual(order, list(changed))

    def test_notOurs(self) -> None:
        """
        A payload someone else sent on the channel decodes to None.
        """
        for payload in (b"hello", b"[]", b'{"changed": {}}', b'{"sender": "x", "changed": {"a": 3}}'):
            self.assertIsNone(decode_notification(payload), payload)


class _Node:
    """
    One process's view: a Database on its own worker pool and a notifier.
    """

    def __init__(self, test: TestCase, url: str, name: str, clock: Any) -> None:
        self.workers = WorkerPoolService(reactor, 2, name=f"test-{name}")
        self.workers.startService()
        self.database = Database(PostgreSQLEngine(url, node_id=name, pool_size=2), self.workers.run)
        self.notifier = PostgresNotifier(self.database, reactor, clock, name)
        self.events: DeferredQueue[str] = DeferredQueue()
        self.notifier.observers.append(self.events.put)
        self.received: DeferredQueue[tuple[str, dict[str, int]]] = DeferredQueue()
        self.everyone: list[tuple[str, dict[str, int]]] = []
        test.addCleanup(self.stop)

    def listen(self, account_id: str) -> None:
        self.notifier.subscribe(account_id, lambda a, states: self.received.put((a, dict(states))))
        self.notifier.subscribe(None, lambda a, states: self.everyone.append((a, dict(states))))

    async def start(self) -> None:
        self.notifier.startService()
        self.assertEvent(await self.events.get(), "listening")
        self.assertEvent(await self.events.get(), "caught up")

    @staticmethod
    def assertEvent(event: str, expected: str) -> None:
        if event != expected:
            raise AssertionError(f"notifier said {event!r}, expected {expected!r}")

    def change(self, account_id: str, *types: str) -> Deferred[dict[str, int]]:
        """
        Commit one change of each type (no local publish: only the NOTIFY).
        """

        def work(txn: Any) -> dict[str, int]:
            return {
                name: changelog.record_change(txn, account_id, name, new_id("x"), changelog.CREATED)
                for name in types
            }

        return self.database.run_interaction(work, write=True)

    async def stop(self) -> None:
        if self.notifier.running:
            await self.notifier.stopService()
        if self.workers.running:
            await self.workers.stopService()
        self.database.close()


class NotifierTests(pg.OnPostgreSQL, TestCase):
    """
    Two nodes, A and B, on one fresh database, with the real reactor and
    real connections; B's backoff runs on a L{Clock}.
    """

    timeout = 60

    async def nodes(self) -> tuple[_Node, _Node, str]:
        url = pg.database_url(self)
        self.clock = Clock()
        a = _Node(self, url, "node-a", Clock())
        b = _Node(self, url, "node-b", self.clock)
        account = a.database.run_sync(accounts.add_account, "alice", None, [], write=True)
        await a.start()
        await b.start()
        return a, b, str(account.id)

    def test_interface(self) -> Any:
        """
        PostgresNotifier provides INotifier.
        """

        async def run() -> None:
            a, _, _ = await self.nodes()
            self.assertTrue(verifyObject(INotifier, a.notifier))

        return ensureDeferred(run())

    def test_otherNodesCommits(self) -> Any:
        """
        Each node's per-account subscribers get the states the other node
        committed, and never the node's own NOTIFYs (those are fanned out
        by publish): A's first notice is B's change, although A's own
        commit was notified before it on the same connection.
        """

        async def run() -> None:
            a, b, alice = await self.nodes()
            a.listen(alice)
            b.listen(alice)
            first = await a.change(alice, "Email", "Mailbox")
            self.assertEqual(await b.received.get(), (alice, first))
            second = await b.change(alice, "Thread")
            self.assertEqual(await a.received.get(), (alice, second))
            self.assertEqual(len(a.received.pending), 0)
            self.assertEqual(len(b.received.pending), 0)

        return ensureDeferred(run())

    def test_localPublish(self) -> Any:
        """
        publish() calls this node's subscribers of the account and of
        every account, as LocalNotifier does.
        """

        async def run() -> None:
            a, _, alice = await self.nodes()
            a.listen(alice)
            a.notifier.publish({alice: {"Email": 4}})
            self.assertEqual(await a.received.get(), (alice, {"Email": 4}))
            self.assertEqual(a.everyone, [(alice, {"Email": 4})])

        return ensureDeferred(run())

    def test_everyAccountSubscribersLocalOnly(self) -> Any:
        """
        A subscriber to every account (the PushSubscription delivery, one
        per node) hears only its own node's commits, so a push service
        gets each change once; subscribers of the account hear both.
        """

        async def run() -> None:
            a, b, alice = await self.nodes()
            b.listen(alice)
            first = await a.change(alice, "Email")
            self.assertEqual(await b.received.get(), (alice, first))
            self.assertEqual(b.everyone, [])

        return ensureDeferred(run())

    def test_noNotificationWithoutCommit(self) -> Any:
        """
        A transaction that rolls back sends nothing: the NOTIFY is part of
        it.  B's first notice is the committed change after it.
        """

        async def run() -> None:
            a, b, alice = await self.nodes()
            b.listen(alice)

            def fails(txn: Any) -> None:
                changelog.record_change(txn, alice, "Email", new_id("x"), changelog.CREATED)
                raise ValueError("changed my mind")

            with self.assertRaises(ValueError):
                await a.database.run_interaction(fails, write=True)
            committed = await a.change(alice, "Mailbox")
            self.assertEqual(await b.received.get(), (alice, committed))
            self.assertEqual(len(b.received.pending), 0)

        return ensureDeferred(run())

    def test_tooLargeReadByReceiver(self) -> Any:
        """
        An account announced by id only (its states too large for a
        payload) is read by the receiver, whose subscribers get its
        current states.
        """

        async def run() -> None:
            original = pgnotify.encode_notifications
            self.patch(
                pgnotify, "encode_notifications", lambda node, sender, changed, **kwargs: original(node, sender, changed, 80, **kwargs)
            )
            a, b, alice = await self.nodes()
            b.listen(alice)
            states = await a.change(alice, "Email", "Mailbox", "Thread")
            self.assertEqual(await b.received.get(), (alice, states))

        return ensureDeferred(run())

    def test_reconnectCatchesUp(self) -> Any:
        """
        When B's LISTEN connection is killed, B logs it, connects again
        after the backoff, and pushes to its subscribers what was
        committed while it was away (no NOTIFY reached it).
        """

        async def run() -> None:
            a, b, alice = await self.nodes()
            b.listen(alice)

            def kill(txn: Any) -> int:
                return int(
                    txn.fetchvalue(
                        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                        " WHERE datname = current_database() AND application_name = ?",
                        ("jmapd node-b listen",),
                    )
                )

            self.assertEqual(await a.database.run_interaction(kill), 1)
            self.assertEqual(await b.events.get(), "lost")
            self.assertEqual(len(self.clock.getDelayedCalls()), 1)
            missed = await a.change(alice, "Email", "Mailbox")
            self.clock.advance(pgnotify.BACKOFF_FIRST)
            self.assertEqual(await b.events.get(), "listening")
            self.assertEqual(await b.received.get(), (alice, missed))
            self.assertEqual(await b.events.get(), "caught up")
            later = await a.change(alice, "Thread")
            self.assertEqual(await b.received.get(), (alice, later))

        return ensureDeferred(run())

    def test_retryWhileDown(self) -> Any:
        """
        A notifier that cannot connect tries again with a growing delay
        and stops cleanly while waiting.
        """

        async def run() -> None:
            clock = Clock()
            node = _Node(self, "postgresql://nobody@127.0.0.1:1/none", "node-c", clock)
            messages: list[dict[str, Any]] = []
            globalLogPublisher.addObserver(messages.append)
            self.addCleanup(globalLogPublisher.removeObserver, messages.append)
            node.notifier.startService()
            self.assertEqual(await node.events.get(), "cannot connect")
            (call,) = clock.getDelayedCalls()
            self.assertEqual(call.getTime(), pgnotify.BACKOFF_FIRST)
            clock.advance(pgnotify.BACKOFF_FIRST)
            self.assertEqual(await node.events.get(), "cannot connect")
            (call,) = clock.getDelayedCalls()
            self.assertEqual(call.getTime(), pgnotify.BACKOFF_FIRST * 3)
            warnings = [m for m in messages if "cannot LISTEN" in m.get("log_format", "")]
            self.assertEqual([m["delay"] for m in warnings], [0.5, 1.0])
            await node.stop()
            self.assertEqual(clock.getDelayedCalls(), [])

        return ensureDeferred(run())

    def test_stopCleanly(self) -> Any:
        """
        Stopping the notifier, even while its connection is being opened,
        leaves no reader on the reactor and no LISTEN connection on the
        server, and it does not connect again.
        """

        async def run() -> None:
            a, b, _ = await self.nodes()
            listeners = (
                "SELECT count(*) FROM pg_stat_activity"
                " WHERE datname = current_database() AND application_name LIKE 'jmapd node-_ listen'"
            )
            await b.notifier.stopService()
            b.notifier.startService()
            await b.notifier.stopService()
            await a.notifier.stopService()
            readers = [r for r in reactor.getReaders() if isinstance(r, pgnotify._Socket)]
            self.assertEqual(readers, [])
            self.assertEqual(self.clock.getDelayedCalls(), [])
            while await a.database.run_interaction(lambda txn: txn.fetchvalue(listeners)):
                await _pause(0.05)
            self.assertEqual(list(b.events.pending), [])

        return ensureDeferred(run())


def _pause(seconds: float) -> Deferred[None]:
    d: Deferred[None] = Deferred()
    reactor.callLater(seconds, d.callback, None)
    return d
