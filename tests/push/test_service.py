"""
Tests for the wiring in L{jmapd.push}: register, install and the push
service's expiry of PushSubscriptions.
"""

from __future__ import annotations

from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import ensureDeferred
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from jmapd import push
from jmapd.config import default_config
from jmapd.environment import Environment
from jmapd.protocol.engine import Registry
from jmapd.push.hub import hub_for
from jmapd.push.notifier import LocalNotifier
from jmapd.push.subscription import deliverable
from jmapd.web.eventsource import EventSourceResource
from jmapd.web.websocket import WebSocketUpgradeResource
from tests.push.support import PushTestCase


class RegisterTests(SynchronousTestCase):
    def test_register(self) -> None:
        """
        register adds the WebSocket capability (not an account capability)
        and PushSubscription/get and /set, the latter a write.
        """
        registry = Registry()
        push.register(registry)
        self.assertIsNone(registry.capabilities[push.WEBSOCKET].account)
        self.assertEqual(
            sorted(name for name in registry.methods if name.startswith("PushSubscription/")),
            ["PushSubscription/get", "PushSubscription/set"],
        )
        self.assertTrue(registry.methods["PushSubscription/set"].write)


class InstallTests(PushTestCase):
    def test_install(self) -> None:
        """
        install returns the eventsource and ws children of /jmap/ and makes
        a hub, with the notifier given, that listens to the environment's
        commits; installing again reuses it.
        """
        env = Environment(config=default_config(), registry=Registry(), database=None, blobs=None, clock=Clock())
        notifier = LocalNotifier()
        children = push.install(env, reactor, None, notifier=notifier)
        self.assertIsInstance(children[b"eventsource"], EventSourceResource)
        self.assertIsInstance(children[b"ws"], WebSocketUpgradeResource)
        hub = hub_for(env)
        self.assertIs(hub.notifier, notifier)
        push.install(env, reactor, None)
        self.assertEqual(env.state_listeners, [hub])
        calls: list[Any] = []
        notifier.subscribe("a1", lambda account_id, states: calls.append(states))
        env.publish_states({"a1": {"Email": 1}})
        self.assertEqual(calls, [{"Email": 1}])

    def test_expired_deleted(self) -> None:
        """
        The push service's maintenance deletes expired subscriptions, URL
        and keys with them.
        """

        async def run() -> None:
            server = await self.start_push_server()
            response = await server.api(
                [["PushSubscription/set", {"create": {"c": {"deviceClientId": "d", "url": "https://push.example/"}}}, "0"]]
            )
            created = response["methodResponses"][0][1]["created"]["c"]

            def count(txn: Any) -> int:
                return int(txn.fetchvalue("SELECT count(*) FROM push_subscriptions"))

            self.assertEqual(server.env.database.run_sync(count), 1)
            service = server.service.getServiceNamed("push")
            self.clock.advance(2e9)
            await service.maintain()
            self.assertEqual(server.env.database.run_sync(count), 0)
            self.assertEqual(server.env.database.run_sync(deliverable, self.account, 0.0), [])
            _, got, _ = (await server.api([["PushSubscription/get", {"ids": [created["id"]]}, "g"]]))["methodResponses"][0]
            self.assertEqual(got["notFound"], [created["id"]])

        return ensureDeferred(run())
