"""
Tests for L{jmapd.push.follow}: push for shared accounts (RFC 9670 section
1.4) over real sockets.  A grantee's open EventSource, WebSocket and
PushSubscription start reporting a shared account once it is shared with
them (directly or through a group) and they subscribe to one of its
Mailboxes, without reconnecting, and stop at once when it is revoked or
they unsubscribe; a user without rights never hears of the account.

Every "nothing arrives" check is made sound the same way: after the change
that must not be pushed, the user changes their own account, and the
channel must carry that change with nothing of the other account before
it.
"""

from __future__ import annotations

from typing import Any, Protocol

from twisted.internet.defer import ensureDeferred
from twisted.trial.unittest import SynchronousTestCase

from jmapd.push.follow import Follower
from jmapd.push.notifier import LocalNotifier
from jmapd.storage import mailboxes, principals
from tests import pg
from tests.push.support import PushTestCase, open_event_stream, open_websocket, settle, start_receiver

CORE = "urn:ietf:params:jmap:core"
MAIL = "urn:ietf:params:jmap:mail"
PRINCIPALS = "urn:ietf:params:jmap:principals"
USING = [CORE, MAIL, PRINCIPALS]

READ = {"mayReadItems": True}


class _Channel(Protocol):
    """
    One user's push channel under test: C{next()} gives the C{changed} map
    of each StateChange it carries, in order.
    """

    async def next(self) -> dict[str, dict[str, str]]: ...


class _EventSourceChannel:
    def __init__(self, stream: Any) -> None:
        self.stream = stream

    async def next(self) -> dict[str, dict[str, str]]:
        while True:
            event = await self.stream.next()
            if event.get("event") == "state":
                return event["data"]["changed"]  # type: ignore[no-any-return]


class _WebSocketChannel:
    def __init__(self, client: Any) -> None:
        self.client = client

    async def next(self) -> dict[str, dict[str, str]]:
        while True:
            message = await self.client.next()
            if message.get("@type") == "StateChange":
                return message["changed"]  # type: ignore[no-any-return]


class _PushSubscriptionChannel:
    def __init__(self, receiver: Any) -> None:
        self.receiver = receiver

    async def next(self) -> dict[str, dict[str, str]]:
        while True:
            message = await self.receiver.next_json()
            if message.get("@type") == "StateChange":
                return message["changed"]  # type: ignore[no-any-return]


class _GranteePushTests:
    """
    alice owns the shared account; bob is the grantee; carol has no
    rights.  Subclasses say how a user's channel is opened.
    """

    async def open_channel(self, user: str) -> _Channel:
        """
        Open the user's channel and wait until it reports their changes.
        """
        raise NotImplementedError(f"{type(self).__name__} opens no channel")

    async def setup(self) -> None:
        await self.start_push_server(event_source_throttle=0.0, push_throttle=0.0)
        self.alice = self.account
        self.bob = self.server.add_account("bob")
        self.carol = self.server.add_account("carol")
        self.inbox = self.server.env.database.run_sync(mailboxes.find_by_role, self.alice, "inbox")

    async def call(self, name: str, arguments: dict[str, Any], auth: str) -> dict[str, Any]:
        response = await self.server.api([[name, arguments, "c"]], using=USING, auth=auth)
        answer, result, _ = response["methodResponses"][0]
        self.assertEqual(answer, name, result)
        return result  # type: ignore[no-any-return]

    async def share(self, grants: dict[str, Any] | None) -> None:
        """
        alice sets the shareWith of her Inbox.
        """
        result = await self.call(
            "Mailbox/set", {"accountId": self.alice, "update": {self.inbox: {"shareWith": grants}}}, "alice"
        )
        self.assertIn(self.inbox, result["updated"], result)

    async def subscribe(self, subscribed: bool, auth: str = "bob") -> None:
        """
        The grantee sets their isSubscribed on alice's Inbox.
        """
        result = await self.call(
            "Mailbox/set", {"accountId": self.alice, "update": {self.inbox: {"isSubscribed": subscribed}}}, auth
        )
        self.assertIn(self.inbox, result["updated"], result)

    async def touch_alice(self) -> str:
        """
        A change in alice's account; its Email state.
        """
        return (await self.touch("Email", auth="alice"))["Email"]

    async def touch_own(self, user: str) -> str:
        """
        A change in the user's own account (a type no sharing change
        moves); its state.
        """
        return (await self.touch("Identity", auth=user))["Identity"]

    async def expect(self, channel: _Channel, account_id: str, type_name: str, state: str | None = None) -> list[Any]:
        """
        Read StateChanges until one carries C{type_name} of C{account_id}
        (at C{state}, if given); return every one read, that one last.
        """
        seen = []
        while True:
            changed = await channel.next()
            seen.append(changed)
            got = changed.get(account_id, {}).get(type_name)
            if got is not None and (state is None or got == state):
                return seen

    async def assert_silent_about_alice(self, channel: _Channel, user: str, user_id: str) -> None:
        """
        Change alice's account, then the user's own: the channel carries the
        user's change and nothing of alice's account before it.
        """
        await self.touch_alice()
        own = await self.touch_own(user)
        seen = await self.expect(channel, user_id, "Identity", own)
        self.assertEqual([c for c in seen if self.alice in c], [])

    async def shared_and_subscribed(self, grantee: str, grantee_id: str) -> None:
        await self.share({grantee_id: READ})
        await self.subscribe(True, grantee)

    async def assert_follows_alice(self, channel: _Channel) -> None:
        """
        A change of alice's account reaches the channel.
        """
        state = await self.touch_alice()
        await self.expect(channel, self.alice, "Email", state)

    async def resubscribe(self, channel: _Channel) -> None:
        """
        bob subscribes to alice's Mailbox again: the channel sends her
        account's states at once, then follows its changes.
        """
        await self.subscribe(True)
        await self.expect(channel, self.alice, "Mailbox")
        await self.assert_follows_alice(channel)

    def test_share_then_subscribe_without_reconnecting(self) -> None:
        """
        A channel opened before the share reports nothing of alice's account
        while bob may read it but is not subscribed; once he subscribes it
        sends the account's current states (so he learns of it) and then
        its changes, on the same connection.
        """

        async def run() -> None:
            await self.setup()
            channel = await self.open_channel("bob")
            await self.share({self.bob: READ})
            await self.assert_silent_about_alice(channel, "bob", self.bob)
            await self.subscribe(True)
            seen = await self.expect(channel, self.alice, "Mailbox")
            self.assertIn("Email", seen[-1][self.alice])
            await self.assert_follows_alice(channel)

        return ensureDeferred(run())

    def test_revocation(self) -> None:
        """
        When alice takes the grant back, bob's open channel stops reporting
        her account at once.
        """

        async def run() -> None:
            await self.setup()
            await self.shared_and_subscribed("bob", self.bob)
            channel = await self.open_channel("bob")
            await self.assert_follows_alice(channel)
            await self.share(None)
            await self.assert_silent_about_alice(channel, "bob", self.bob)

        return ensureDeferred(run())

    def test_unsubscribe(self) -> None:
        """
        When bob unsubscribes from the only Mailbox of alice's he was
        subscribed to, his open channel stops reporting her account; when
        he subscribes again it reports it again.
        """

        async def run() -> None:
            await self.setup()
            await self.shared_and_subscribed("bob", self.bob)
            channel = await self.open_channel("bob")
            await self.assert_follows_alice(channel)
            await self.subscribe(False)
            await self.assert_silent_about_alice(channel, "bob", self.bob)
            await self.resubscribe(channel)

        return ensureDeferred(run())

    def test_shared_mailbox_destroyed(self) -> None:
        """
        When alice destroys the only Mailbox she shared with bob, his open
        channel stops reporting her account.
        """

        async def run() -> None:
            await self.setup()
            created = await self.call(
                "Mailbox/set", {"accountId": self.alice, "create": {"m": {"name": "Team", "shareWith": {self.bob: READ}}}},
                "alice",
            )
            team = created["created"]["m"]["id"]
            result = await self.call(
                "Mailbox/set", {"accountId": self.alice, "update": {team: {"isSubscribed": True}}}, "bob"
            )
            self.assertIn(team, result["updated"], result)
            channel = await self.open_channel("bob")
            await self.assert_follows_alice(channel)
            result = await self.call("Mailbox/set", {"accountId": self.alice, "destroy": [team]}, "alice")
            self.assertEqual(result["destroyed"], [team], result)
            await self.assert_silent_about_alice(channel, "bob", self.bob)

        return ensureDeferred(run())

    def test_no_rights(self) -> None:
        """
        carol, who has no right on alice's account, never gets its changes,
        even while alice shares it with bob and bob subscribes.
        """

        async def run() -> None:
            await self.setup()
            channel = await self.open_channel("carol")
            await self.shared_and_subscribed("bob", self.bob)
            await self.assert_silent_about_alice(channel, "carol", self.carol)
            # Subscribing without a right changes nothing either.
            response = await self.server.api(
                [["Mailbox/set", {"accountId": self.alice, "update": {self.inbox: {"isSubscribed": True}}}, "c"]],
                using=USING,
                auth="carol",
            )
            self.assertEqual(response["methodResponses"][0][1]["type"], "accountNotFound")
            await self.assert_silent_about_alice(channel, "carol", self.carol)

        return ensureDeferred(run())

    def test_group_grant(self) -> None:
        """
        A grant to a group bob is a member of works as a grant to bob: his
        open channel reports alice's account once he subscribes, and stops
        when the group's grant is taken back.
        """

        async def run() -> None:
            await self.setup()
            group = self.server.env.database.run_sync(principals.add_group, "staff", [self.bob], write=True)
            channel = await self.open_channel("bob")
            await self.share({group: READ})
            await self.resubscribe(channel)
            await self.share(None)
            await self.assert_silent_about_alice(channel, "bob", self.bob)

        return ensureDeferred(run())

    def test_share_again_after_revocation(self) -> None:
        """
        The revocation took bob's subscription with it: when alice shares
        the Mailbox with him again, his open channel stays silent about her
        account (he is not subscribed, RFC 9670 section 1.4) until he
        subscribes again.
        """

        async def run() -> None:
            await self.setup()
            await self.shared_and_subscribed("bob", self.bob)
            channel = await self.open_channel("bob")
            await self.assert_follows_alice(channel)
            await self.share(None)
            await self.assert_silent_about_alice(channel, "bob", self.bob)
            await self.share({self.bob: READ})
            await self.assert_silent_about_alice(channel, "bob", self.bob)
            await self.resubscribe(channel)

        return ensureDeferred(run())

    def test_back_in_group(self) -> None:
        """
        bob leaves the group his only right came from, and his open channel
        stops reporting alice's account; back in the group, it stays
        silent: his subscription went with his right.
        """

        def members(txn: Any, add: bool) -> None:
            # What jmapd-admin group add-member / remove-member do, with
            # the changes published as the server publishes its own.
            if add:
                principals.add_group(txn, "staff", [self.bob])
            else:
                principals.remove_group_members(txn, "staff", [self.bob])
            principals.touch_shared_accounts(txn, [self.bob])
            changed = txn.__dict__["changed_states"]
            txn.after_commit(lambda: self.server.env.publish_states(changed))

        async def run() -> None:
            await self.setup()
            database = self.server.env.database
            group = database.run_sync(principals.add_group, "staff", [self.bob], write=True)
            await self.share({group: READ})
            await self.subscribe(True)
            channel = await self.open_channel("bob")
            await self.assert_follows_alice(channel)
            database.run_sync(members, False, write=True)
            await self.assert_silent_about_alice(channel, "bob", self.bob)
            database.run_sync(members, True, write=True)
            await self.assert_silent_about_alice(channel, "bob", self.bob)

        return ensureDeferred(run())


class EventSourceTests(_GranteePushTests, PushTestCase):
    async def open_channel(self, user: str) -> _Channel:
        stream = await open_event_stream(self, auth=user)
        # The first message (an id) comes once the stream follows its accounts.
        first = await stream.next()
        self.assertNotIn("event", first)
        return _EventSourceChannel(stream)


class WebSocketTests(_GranteePushTests, PushTestCase):
    async def open_channel(self, user: str) -> _Channel:
        before = set(self.hub.websocket.connections)
        client = await open_websocket(self, auth=user)
        client.send({"@type": "WebSocketPushEnable", "dataTypes": None})
        # Push is on once its snapshot was read (nothing acknowledges the
        # message: a change committed before the server read it would be
        # in the snapshot, not pushed); then a change of the user's own
        # account comes through.
        await settle(lambda: any(c.pushed_accounts for c in self.hub.websocket.connections - before))
        own = await self.touch_own(user)
        owner = self.server.env.database.run_sync(principals.individual_by_name, user)
        channel = _WebSocketChannel(client)
        await self.expect(channel, owner, "Identity", own)
        return channel


class PushSubscriptionTests(_GranteePushTests, PushTestCase):
    async def open_channel(self, user: str) -> _Channel:
        receiver, url = start_receiver(self)
        created = await self.call(
            "PushSubscription/set", {"create": {"c": {"deviceClientId": "d", "url": url}}}, user
        )
        subscription_id = created["created"]["c"]["id"]
        verification = await receiver.next_json()
        await self.call(
            "PushSubscription/set",
            {"update": {subscription_id: {"verificationCode": verification["verificationCode"]}}},
            user,
        )
        # Delivery follows the user's accounts once it has read them: wait
        # for a change of the user's own account to come through.
        own = await self.touch_own(user)
        owner = self.server.env.database.run_sync(principals.individual_by_name, user)
        channel = _PushSubscriptionChannel(receiver)
        await self.expect(channel, owner, "Identity", own)
        return channel


class _Database:
    """
    Runs an interaction at once, or holds it until C{finish}.
    """

    def __init__(self, answer: Any) -> None:
        self.answer = answer
        self.waiting: list[Any] = []

    def run_interaction(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        from twisted.internet.defer import Deferred

        d: Deferred[Any] = Deferred()
        self.waiting.append(d)
        return d

    def finish(self) -> None:
        waiting, self.waiting = self.waiting, []
        for d in waiting:
            d.callback(self.answer())


class FollowerTests(SynchronousTestCase):
    """
    L{Follower} with a L{LocalNotifier} and a database whose answers the
    test gives: what it holds while it reads, and what it passes on.
    """

    def setUp(self) -> None:
        from jmapd.protocol.engine import Principal

        self.notifier = LocalNotifier()
        self.accounts = frozenset({"bob"})
        self.added: dict[str, dict[str, int]] = {}
        self.database = _Database(lambda: (self.accounts, self.added))

        class Env:
            database = self.database

        self.delivered: list[tuple[str, dict[str, int]]] = []
        self.follower = Follower(Env(), self.notifier, Principal("bob", "bob"), lambda a, s: self.delivered.append((a, dict(s))))

    def test_held_until_start(self) -> None:
        """
        Changes made while the snapshot is read are held; at L{Follower.start}
        those newer than the snapshot of followed accounts are passed on,
        the rest dropped.
        """
        self.follower.hold()
        self.notifier.publish({"bob": {"Email": 5, "Mailbox": 3}, "alice": {"Email": 9}})
        self.follower.start(["bob"], {"bob": 4})
        self.assertEqual(self.delivered, [("bob", {"Email": 5})])
        self.assertEqual(self.notifier.listening(None), 0)
        self.notifier.publish({"bob": {"Email": 6}, "alice": {"Email": 10}})
        self.assertEqual(self.delivered[-1], ("bob", {"Email": 6}))
        self.assertEqual(len(self.delivered), 2)

    def test_refresh_adds_and_removes(self) -> None:
        """
        A ShareNotification of the user's own account makes the follower
        read its accounts again; while it reads it holds changes; then it
        sends the current states of a new account, the held changes newer
        than those, and listens to the new account; an account no longer
        seen goes silent.
        """
        self.follower.start(["bob"], {})
        self.notifier.publish({"bob": {"ShareNotification": 7}})
        self.assertEqual(self.delivered, [("bob", {"ShareNotification": 7})])
        self.assertEqual(len(self.database.waiting), 1)
        self.notifier.publish({"alice": {"Email": 3, "Mailbox": 4}})
        self.accounts = frozenset({"bob", "alice"})
        self.added = {"alice": {"Email": 3, "Mailbox": 2}}
        self.database.finish()
        self.assertEqual(self.delivered[1:], [("alice", {"Email": 3, "Mailbox": 2}), ("alice", {"Mailbox": 4})])
        self.assertEqual(self.notifier.listening("alice"), 1)
        self.assertEqual(self.notifier.listening(None), 0)
        del self.delivered[:]
        self.notifier.publish({"bob": {"SharedAccounts": 8}})
        self.notifier.publish({"alice": {"Email": 5}})
        self.accounts = frozenset({"bob"})
        self.added = {}
        self.database.finish()
        self.notifier.publish({"alice": {"Email": 6}})
        self.assertEqual(self.delivered, [("bob", {"SharedAccounts": 8})])
        self.assertEqual(self.notifier.listening("alice"), 0)

    def test_same_commit_as_trigger(self) -> None:
        """
        A followed account's change published with a trigger, after it, is
        held and passed on once the account is known to stay followed;
        dropped if it does not.
        """
        self.follower.start(["bob", "alice"], {})
        self.accounts = frozenset({"bob", "alice"})
        self.notifier.publish({"bob": {"ShareNotification": 7}, "alice": {"Mailbox": 9}})
        self.assertEqual(self.delivered, [("bob", {"ShareNotification": 7})])
        self.database.finish()
        self.assertEqual(self.delivered[1:], [("alice", {"Mailbox": 9})])
        self.accounts = frozenset({"bob"})
        self.notifier.publish({"bob": {"ShareNotification": 8}, "alice": {"Mailbox": 10}})
        self.database.finish()
        self.assertEqual(self.delivered[2:], [("bob", {"ShareNotification": 8})])

    def test_trigger_while_reading(self) -> None:
        """
        A trigger that comes while the accounts are being read makes one
        more read follow (the first may have missed its change).
        """
        self.follower.start(["bob"], {})
        self.notifier.publish({"bob": {"ShareNotification": 7}})
        self.notifier.publish({"bob": {"SharedAccounts": 8}})
        self.assertEqual(len(self.database.waiting), 1)
        self.database.finish()
        self.assertEqual(len(self.database.waiting), 1)
        self.database.finish()
        self.assertEqual(self.database.waiting, [])
        self.assertEqual(self.delivered, [("bob", {"ShareNotification": 7}), ("bob", {"SharedAccounts": 8})])

    def test_close(self) -> None:
        """
        A closed follower listens to nothing, also when a read it started
        ends afterwards.
        """
        self.follower.start(["bob"], {})
        self.notifier.publish({"bob": {"ShareNotification": 7}})
        self.follower.close()
        self.accounts = frozenset({"bob", "alice"})
        self.database.finish()
        self.assertEqual((self.notifier.listening("bob"), self.notifier.listening("alice")), (0, 0))
        self.assertEqual(self.notifier.listening(None), 0)


pg.add_postgresql_variants(globals(), EventSourceTests, WebSocketTests, PushSubscriptionTests)
