# -*- test-case-name: tests.push.test_service -*-
"""
Push (RFC 8620 section 7, RFC 8887): clients learn about changes at once.

Three calls wire it into a service (see docs/push.md):

    register(registry)                       PushSubscription/get, /set and the
                                             urn:ietf:params:jmap:websocket capability
    install(env, reactor, authenticator)     -> {b"eventsource": ..., b"ws": ...},
                                             the children of /jmap/
    service(env, reactor)                    delivery and expiry, started and
                                             stopped with the server

The web modules are imported inside L{install}: they import
L{jmapd.push.notifier}, so importing them here would be circular.
"""

from __future__ import annotations

from typing import Any

from twisted.application.internet import TimerService
from twisted.application.service import MultiService
from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.web.resource import Resource

from jmapd.protocol.engine import Capability, Registry
from jmapd.push import subscription
from jmapd.push.hub import PushHub, ensure_hub, hub_for

log = Logger()

WEBSOCKET = "urn:ietf:params:jmap:websocket"

#: How often expired PushSubscriptions are deleted.
MAINTENANCE_INTERVAL = 60.0

__all__ = ["WEBSOCKET", "PushHub", "PushService", "hub_for", "install", "register", "service", "websocket_url"]


def websocket_url(jmap_url: str) -> str:
    """
    The WebSocket URL under C{jmap-url}: C{wss://} for an https server.
    """
    base = jmap_url.rstrip("/")
    if base.startswith("https://"):
        base = "wss://" + base[len("https://"):]
    elif base.startswith("http://"):
        base = "ws://" + base[len("http://"):]
    return f"{base}/jmap/ws"


def websocket_capability(env: Any) -> dict[str, Any]:
    """
    The session's C{urn:ietf:params:jmap:websocket} value (RFC 8887
    section 4.1).
    """
    return {"url": websocket_url(env.config.jmap_url), "supportsPush": True}


def register(registry: Registry) -> None:
    """
    Add what push offers through the API: the WebSocket capability and the
    PushSubscription methods.
    """
    registry.add_capability(Capability(WEBSOCKET, websocket_capability))
    subscription.register(registry)


def install(
    env: Any, reactor: Any, authenticator: Any, clock: Any = None, notifier: Any = None
) -> dict[bytes, Resource]:
    """
    Connect push to the environment's commits and make its resources.

    @param clock: for throttling, pings and retries (the reactor if
        omitted; tests pass a L{twisted.internet.task.Clock}).
    @param notifier: an L{INotifier} (a L{LocalNotifier} if omitted).
    @return: the children of C{/jmap/}: C{eventsource} and C{ws}.
    """
    from jmapd.web.eventsource import EventSourceResource
    from jmapd.web.websocket import JMAPWebSocketFactory, WebSocketUpgradeResource

    hub = ensure_hub(env, reactor, clock, notifier)
    if notifier is not None and hub.notifier is not notifier:
        raise ValueError("push is already installed with another notifier")
    hub.eventsource = EventSourceResource(env, authenticator, hub.notifier, hub.clock)
    hub.websocket = JMAPWebSocketFactory(env, hub.notifier, hub.clock, reactor)
    return {
        b"eventsource": hub.eventsource,
        b"ws": WebSocketUpgradeResource(env, authenticator, hub.websocket),
    }


class PushService(MultiService):
    """
    Push delivery and the periodic expiry of PushSubscriptions; stopping it
    ends the open push connections.
    """

    name = "push"

    def __init__(self, env: Any, reactor: Any, clock: Any = None, notifier: Any = None) -> None:
        super().__init__()
        self.env = env
        self.hub = ensure_hub(env, reactor, clock, notifier)
        timer = TimerService(MAINTENANCE_INTERVAL, self.maintain)
        timer.clock = self.hub.clock
        timer.setServiceParent(self)

    def startService(self) -> None:
        super().startService()
        d = self.hub.delivery.start()
        d.addErrback(lambda f: log.failure("cannot load the PushSubscriptions", f))

    def stopService(self) -> Deferred[Any]:
        self.hub.delivery.stop()
        d = super().stopService()
        closing = self.hub.close_connections()
        closing.addCallback(lambda _: d)
        return closing

    def maintain(self) -> Deferred[Any] | None:
        """
        Delete expired PushSubscriptions and read again which accounts have
        subscriptions.
        """
        env = self.env
        if env.workers is not None and not env.workers.running:
            return None
        now = float(self.hub.clock.seconds())
        d = env.database.run_interaction(subscription.expire, now, write=True)

        def expired(count: int) -> Deferred[None] | None:
            if count:
                log.info("push: deleted {count} expired PushSubscriptions", count=count)
            if not self.running:
                return None
            return self.hub.delivery.reload()

        d.addCallback(expired)
        d.addErrback(lambda f: log.failure("push maintenance failed", f))
        return d


def service(env: Any, reactor: Any, clock: Any = None, notifier: Any = None) -> PushService:
    """
    The push service for C{env}: add it to the jmapd service after the web
    service, so it stops (and closes the push connections) first.

    @param notifier: an L{INotifier} (a L{LocalNotifier} if omitted); the
        same one must then be given to L{install}.
    """
    return PushService(env, reactor, clock, notifier)
