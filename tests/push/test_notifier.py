"""
Tests for L{jmapd.push.notifier}: the fan-out, the StateChange object,
positions (event ids and pushStates), replays and the per-connection
throttle.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from jmapd.push.notifier import (
    EMAIL_DELIVERY,
    INotifier,
    LocalNotifier,
    ThrottledChannel,
    account_modseqs,
    decode_position,
    encode_position,
    missed_states,
    record_delivery,
    state_change,
)
from jmapd.storage import accounts, changelog
from tests.storage.test_database import make_database


class NotifierTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.notifier = LocalNotifier()
        self.calls: list[tuple[str, Any]] = []

    def listener(self, account_id: str, states: Any) -> None:
        self.calls.append((account_id, dict(states)))

    def test_interface(self) -> None:
        """
        LocalNotifier provides INotifier, the interface another backend
        (PostgreSQL LISTEN/NOTIFY) implements.
        """
        self.assertTrue(verifyObject(INotifier, self.notifier))

    def test_per_account(self) -> None:
        """
        A listener hears the changes of its account only.
        """
        self.notifier.subscribe("a1", self.listener)
        self.notifier.publish({"a1": {"Email": 3}, "a2": {"Email": 4}})
        self.assertEqual(self.calls, [("a1", {"Email": 3})])

    def test_every_account(self) -> None:
        """
        A listener for None hears every account's changes.
        """
        self.notifier.subscribe(None, self.listener)
        self.notifier.publish({"a1": {"Email": 3}, "a2": {"Mailbox": 4}})
        self.assertEqual(sorted(self.calls), [("a1", {"Email": 3}), ("a2", {"Mailbox": 4})])

    def test_unsubscribe(self) -> None:
        """
        After unsubscribe a listener hears nothing, and unsubscribing again
        is harmless; the account's entry is gone.
        """
        self.notifier.subscribe("a1", self.listener)
        self.notifier.unsubscribe("a1", self.listener)
        self.notifier.unsubscribe("a1", self.listener)
        self.notifier.publish({"a1": {"Email": 3}})
        self.assertEqual((self.calls, self.notifier.listening("a1")), ([], 0))

    def test_failing_listener(self) -> None:
        """
        A listener that raises is logged and does not keep the others from
        hearing the change.
        """

        def broken(account_id: str, states: Any) -> None:
            raise RuntimeError("boom")

        self.notifier.subscribe("a1", broken)
        self.notifier.subscribe("a1", self.listener)
        self.notifier.publish({"a1": {"Email": 3}})
        self.assertEqual(self.calls, [("a1", {"Email": 3})])
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)

    def test_state_change(self) -> None:
        """
        The StateChange object maps accounts to types to state strings.
        """
        self.assertEqual(
            state_change({"a1": {"Email": 3, "Mailbox": 2}}),
            {"@type": "StateChange", "changed": {"a1": {"Email": "3", "Mailbox": "2"}}},
        )

    def test_position(self) -> None:
        """
        A position is written as account:modseq pairs and read back;
        anything else is not a position.
        """
        position = {"a1": 42, "b2": 7}
        self.assertEqual(encode_position(position), "a1:42,b2:7")
        self.assertEqual(decode_position(encode_position(position)), position)
        for text in [None, "", "a1", "a1:x", "a1:-1", ":3", "a1:²"]:
            self.assertIsNone(decode_position(text), text)


class ReplayTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.database = make_database(self, account_hooks=False)
        self.account = self.database.run_sync(accounts.add_account, "alice", None, write=True).id

    def change(self, type_name: str) -> int:
        return self.database.run_sync(
            changelog.record_change, self.account, type_name, f"{type_name}-{id(object())}", changelog.CREATED,
            write=True,
        )

    def test_missed(self) -> None:
        """
        The types changed after a position are reported with their current
        modseqs; older ones are not.
        """
        self.change("Mailbox")
        position = self.database.run_sync(account_modseqs, [self.account])
        self.change("Email")
        latest = self.change("Email")
        missed = self.database.run_sync(missed_states, position)
        self.assertEqual(missed, {self.account: {"Email": latest}})
        self.assertEqual(self.database.run_sync(account_modseqs, [self.account]), {self.account: latest})

    def test_record_delivery(self) -> None:
        """
        The delivery hook gives EmailDelivery a new state in the same
        transaction, published with the Email change after the commit.
        """
        published: list[Any] = []

        def deliver(txn: Any) -> None:
            changelog.record_change(txn, self.account, "Email", "m1", changelog.CREATED)
            record_delivery(txn, self.account)
            changed = txn.changed_states
            txn.after_commit(lambda: published.append(changed))

        self.database.run_sync(deliver, write=True)
        self.assertEqual(published, [{self.account: {"Email": 1, EMAIL_DELIVERY: 2}}])


class ThrottledChannelTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.sent: list[dict[str, Any]] = []
        self.channel = ThrottledChannel(self.clock, 1.0, self.sent.append)

    def test_first_change_at_once(self) -> None:
        """
        A change after a quiet period is sent at once.
        """
        self.channel.add("a1", {"Email": 3})
        self.assertEqual(self.sent, [{"a1": {"Email": 3}}])

    def test_burst_coalesced(self) -> None:
        """
        Changes within the throttle interval wait and go out as one event
        with the newest state of each type.
        """
        self.channel.add("a1", {"Email": 3})
        self.clock.advance(0.2)
        self.channel.add("a1", {"Email": 4})
        self.channel.add("a1", {"Mailbox": 5, "Email": 5})
        self.channel.add("a2", {"Email": 9})
        self.assertEqual(len(self.sent), 1)
        self.clock.advance(0.79)
        self.assertEqual(len(self.sent), 1)
        self.clock.advance(0.01)
        self.assertEqual(self.sent[1], {"a1": {"Email": 5, "Mailbox": 5}, "a2": {"Email": 9}})
        self.clock.advance(5)
        self.channel.add("a1", {"Email": 10})
        self.assertEqual(self.sent[2], {"a1": {"Email": 10}})

    def test_out_of_order(self) -> None:
        """
        A state that arrives after a newer one of the same type does not
        replace it.
        """
        self.channel.add("a1", {"Email": 3})
        self.channel.add("a1", {"Email": 7})
        self.channel.add("a1", {"Email": 6})
        self.clock.advance(1)
        self.assertEqual(self.sent[1], {"a1": {"Email": 7}})

    def test_types(self) -> None:
        """
        Types the channel does not want are not sent, but still move its
        position.
        """
        channel = ThrottledChannel(self.clock, 1.0, self.sent.append, frozenset({"Email"}))
        channel.add("a1", {"Mailbox": 4})
        self.assertEqual((self.sent, channel.position), ([], {"a1": 4}))
        channel.add("a1", {"Mailbox": 5, "Email": 5})
        self.assertEqual(self.sent, [{"a1": {"Email": 5}}])

    def test_close(self) -> None:
        """
        Closing drops what is pending and its timer, and later changes are
        ignored.
        """
        self.channel.add("a1", {"Email": 3})
        self.channel.add("a1", {"Email": 4})
        self.channel.close()
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.clock.advance(5)
        self.channel.add("a1", {"Email": 5})
        self.assertEqual((len(self.sent), self.clock.getDelayedCalls()), (1, []))
