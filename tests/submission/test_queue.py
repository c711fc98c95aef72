"""
Tests for L{jmapd.submission.queue} and L{jmapd.submission.relay.queue_message}:
the durable outgoing queue, its claims, and the service that empties it
through a real SMTP relay on a L{task.Clock}.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import attrs
from twisted.internet.defer import ensureDeferred
from twisted.trial.unittest import SynchronousTestCase

from jmapd.config import default_config
from jmapd.storage import submissions as storage
from jmapd.submission import SendingDisabled, sending_enabled
from jmapd.submission.queue import backoff, delivery_status
from jmapd.submission.relay import Reply, queue_message
from tests import pg
from tests.submission.support import RecordingRelay, start_sending_server
from tests.support import ServerTestCase

REPLY = (
    b"From: alice@example.com\r\n"
    b"To: someone@example.org\r\n"
    b"Bcc: kept@example.org\r\n"
    b"Auto-Submitted: auto-replied\r\n"
    b"Subject: Out of office\r\n"
    b"\r\n"
    b"I am away.\r\n"
)


class PureTests(SynchronousTestCase):
    """
    The backoff and the DeliveryStatus a reply becomes.
    """

    def test_backoff(self) -> None:
        """
        Waits double from the base and stop growing at the maximum.
        """
        self.assertEqual([backoff(n, 60, 3600) for n in (1, 2, 3, 6, 7, 20)], [60, 120, 240, 1920, 3600, 3600])

    def test_deliveryStatus(self) -> None:
        """
        Accepted by the relay is "unknown" (relayed, fate unknown), 5xx is
        "no", 4xx is still "queued" unless the queue gave up.
        """
        self.assertEqual(delivery_status(Reply(250, "250 ok"), False)["delivered"], "unknown")
        self.assertEqual(delivery_status(Reply(550, "550 no"), False)["delivered"], "no")
        self.assertEqual(delivery_status(Reply(451, "451 later"), False)["delivered"], "queued")
        self.assertEqual(delivery_status(Reply(451, "451 later"), True)["delivered"], "no")
        self.assertEqual(delivery_status(Reply(250, "250 ok"), False)["displayed"], "unknown")

    def test_sendingEnabled(self) -> None:
        """
        Sending is on exactly when smtp-relay-host is set.
        """
        self.assertFalse(sending_enabled(default_config()))
        self.assertTrue(sending_enabled(default_config(smtp_relay_host="relay.example.com")))


class ClaimTests(SynchronousTestCase):
    """
    Claims on queued messages, in the database.
    """

    def setUp(self) -> None:
        from tests.protocol.test_engine import add_principal, make_environment

        self.env = make_environment(self)
        self.account = add_principal(self.env, "alice").account_id

    def db(self, fn: Any, *args: Any) -> Any:
        return self.env.database.run_sync(fn, *args, write=True)

    def enqueue(self, release_at: float) -> str:
        return str(self.db(storage.enqueue, self.account, None, "a@x.org", ["b@x.org"], b"m", 0.0, release_at))

    def test_claimDueOnly(self) -> None:
        """
        Only due messages are claimed, earliest first; next_due says when
        the next one is.
        """
        later = self.enqueue(100.0)
        due = self.enqueue(10.0)
        claimed = self.db(storage.claim_due, 50.0, 30.0, 10)
        self.assertEqual([m.id for m in claimed], [due])
        self.assertEqual(self.db(storage.next_due), 80.0)
        self.assertNotEqual(later, due)

    def test_claimExcludesOthers(self) -> None:
        """
        A claimed message is not claimed again until its claim lapses (a
        sender that died), then it is.
        """
        queue_id = self.enqueue(0.0)
        self.assertEqual(len(self.db(storage.claim_due, 1.0, 30.0, 10)), 1)
        self.assertEqual(self.db(storage.claim_due, 20.0, 30.0, 10), [])
        self.assertEqual([m.id for m in self.db(storage.claim_due, 31.0, 30.0, 10)], [queue_id])

    def test_releaseAndReschedule(self) -> None:
        """
        A released claim makes the message claimable at once; a reschedule
        keeps only the recipients left and counts the attempt.
        """
        queue_id = self.enqueue(0.0)
        self.db(storage.claim_due, 1.0, 30.0, 10)
        self.db(storage.release, [queue_id])
        [message] = self.db(storage.claim_due, 2.0, 30.0, 10)
        self.db(storage.reschedule, queue_id, ["b@x.org"], 100.0, "451 4.0.0 later")
        queued = self.db(storage.get_queued, queue_id)
        self.assertEqual((queued.attempts, queued.recipients), (1, ["b@x.org"]))
        self.assertEqual(self.db(storage.claim_due, 99.0, 30.0, 10), [])


class ClaimRaceTests(SynchronousTestCase):
    """
    Two senders (two nodes on one PostgreSQL database) claiming at once.
    """

    def test_concurrent_claims_disjoint(self) -> None:
        """
        When a second sender reads the queue while the first has claimed a
        message but not committed yet, the second does not claim it too
        (which would send the message twice): exactly one of them gets it.
        """
        from tests.protocol.test_engine import add_principal, make_environment

        env = make_environment(self)
        account = add_principal(env, "alice").account_id
        env.database.run_sync(storage.enqueue, account, None, "a@x.org", ["b@x.org"], b"m", 0.0, 0.0, write=True)
        first_claimed = threading.Event()
        second_started = threading.Event()
        results: dict[str, list[Any]] = {}

        def first(txn: Any) -> list[Any]:
            claimed = storage.claim_due(txn, 1.0, 30.0, 10)
            first_claimed.set()
            second_started.wait(10)
            # Give the second sender time to read the queue and reach its
            # UPDATE, which waits for this transaction.
            time.sleep(0.3)
            return claimed

        def second(txn: Any) -> list[Any]:
            second_started.set()
            return storage.claim_due(txn, 1.0, 30.0, 10)

        def run(name: str, fn: Any) -> None:
            if name == "second":
                first_claimed.wait(10)
            results[name] = env.database.run_sync(fn, write=True)

        threads = [threading.Thread(target=run, args=args) for args in (("first", first), ("second", second))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        self.assertEqual(len(results["first"]) + len(results["second"]), 1, results)


class QueueMessageTests(ServerTestCase):
    """
    queue_message, the entry for messages the server sends by itself.
    """

    def test_sentAfterCommit(self) -> None:
        """
        A message queued in a transaction is relayed once it commits, with
        the null reverse-path and its octets unchanged (its Bcc included:
        only EmailSubmissions lose theirs).
        """
        relay = RecordingRelay(self)
        relay.start()

        async def go() -> None:
            server, clock, queue = await start_sending_server(self, relay)
            account = server.add_account("alice", ("alice@example.com",))
            queue_id = await server.env.database.run_interaction(
                lambda txn: queue_message(txn, server.env, account, "", ["someone@example.org"], REPLY), write=True
            )
            self.assertTrue(queue_id)
            await queue.when_idle()
            [received] = relay.received
            self.assertEqual(received.mail_from, "")
            self.assertEqual(received.rcpt_to, ["someone@example.org"])
            self.assertEqual(received.data, REPLY)
            self.assertEqual(server.env.database.run_sync(storage.queue_length), 0)

        return ensureDeferred(go())

    def test_rolledBack(self) -> None:
        """
        A message queued in a transaction that rolls back is never sent.
        """
        relay = RecordingRelay(self)
        relay.start()

        async def go() -> None:
            server, clock, queue = await start_sending_server(self, relay)
            account = server.add_account("alice", ("alice@example.com",))

            def work(txn: Any) -> None:
                queue_message(txn, server.env, account, "", ["someone@example.org"], REPLY)
                raise ValueError("delivery failed")

            with self.assertRaises(ValueError):
                await server.env.database.run_interaction(work, write=True)
            clock.advance(3600)
            await queue.when_idle()
            self.assertEqual(relay.sessions_count, 0)
            self.assertEqual(server.env.database.run_sync(storage.queue_length), 0)

        return ensureDeferred(go())

    def test_givenUp(self) -> None:
        """
        A message the relay keeps refusing temporarily is given up after
        the queue's limit; its EmailSubmission-less row is removed.
        """
        relay = RecordingRelay(self)
        relay.start()
        relay.rcpt_reply = lambda address, session: (451, "4.3.0 Try later")

        async def go() -> None:
            server, clock, queue = await start_sending_server(self, relay)
            queue.give_up_after = 300.0
            account = server.add_account("alice", ("alice@example.com",))
            await server.env.database.run_interaction(
                lambda txn: queue_message(txn, server.env, account, "", ["someone@example.org"], REPLY), write=True
            )
            await queue.when_idle()
            for _ in range(4):
                clock.advance(3600)
                await queue.when_idle()
            self.assertEqual(relay.sessions_count, 2)
            self.assertEqual(server.env.database.run_sync(storage.queue_length), 0)

        return ensureDeferred(go())

    def test_sendingDisabled(self) -> None:
        """
        Without smtp-relay-host, queue_message refuses: the message could
        never leave.
        """

        async def go() -> None:
            server = await self.start_server()
            account = server.add_account("alice", ("alice@example.com",))
            server.env.config = attrs.evolve(server.env.config, smtp_relay_host=None)
            with self.assertRaises(SendingDisabled):
                server.env.database.run_sync(
                    queue_message, server.env, account, "", ["someone@example.org"], REPLY, write=True
                )

        return ensureDeferred(go())


pg.add_postgresql_variants(globals(), ClaimRaceTests)


class StopWhileClaimingTests(SynchronousTestCase):
    """
    Stopping the queue while it is looking at the queue.
    """

    def test_claimsReleasedBeforeStopped(self) -> None:
        """
        When the queue is stopped while its look at the queue is in
        flight, the Deferred of stopService fires only after the claims
        that look brings back have been released (so the worker pool,
        which stops after the queue, still runs the release).
        """
        from twisted.internet.defer import Deferred
        from twisted.internet.task import Clock

        from jmapd.submission.queue import QueueService

        jobs: list[tuple[Any, tuple[Any, ...], Deferred[Any]]] = []

        class Database:
            def run_interaction(self, fn: Any, *args: Any, write: bool = False) -> Deferred[Any]:
                d: Deferred[Any] = Deferred()
                jobs.append((fn, args, d))
                return d

        clock = Clock()
        env = attrs.make_class("Env", ["database", "clock", "config"])(Database(), clock, default_config())
        relay = attrs.make_class("Relay", ["host", "port", "tls"])("127.0.0.1", 9, None)
        queue = QueueService(env, None, clock=clock, relay=relay)
        queue.startService()
        ((claim, _, claiming),) = jobs
        self.assertEqual(claim.__name__, "_claim")
        stopped: list[None] = []
        queue.stopService().addCallback(stopped.append)
        self.assertEqual(stopped, [])
        message = storage.QueuedMessage("q1", "a1", None, "a@x.org", ["b@x.org"], b"m", 0.0, 0)
        claiming.callback(([message], None, 0.0))
        self.assertEqual(stopped, [])
        (release, args, releasing) = jobs[1]
        self.assertEqual((release, args), (storage.release, (["q1"],)))
        releasing.callback(None)
        self.assertEqual(stopped, [None])
