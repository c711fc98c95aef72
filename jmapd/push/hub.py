# -*- test-case-name: tests.push.test_service -*-
"""
What push adds to one running service: the notifier, the PushSubscription
delivery, and the open push connections, reachable from the environment.

The hub is the environment's state listener (C{env.state_listeners}): each
commit's changed states go through it to the notifier.  Being in that list
is also how a method (PushSubscription/set, in a worker thread's
after-commit callback) finds the delivery of its own service: no global
state, so several services may run in one process.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from twisted.internet.defer import Deferred, DeferredList

from jmapd.push.follow import TRIGGERS
from jmapd.push.notifier import INotifier, LocalNotifier
from jmapd.push.subscription import PushDelivery


class PushHub:
    """
    @ivar eventsource: the EventSource resource, once installed.
    @ivar websocket: the WebSocket factory, once installed.
    """

    def __init__(self, env: Any, reactor: Any, clock: Any, notifier: Any = None) -> None:
        self.env = env
        self.reactor = reactor
        self.clock = clock
        self.notifier: Any = notifier if notifier is not None else LocalNotifier()
        assert INotifier.providedBy(self.notifier), "the notifier must provide INotifier"
        self.delivery = PushDelivery(env, self.notifier, clock, reactor)
        self.eventsource: Any = None
        self.websocket: Any = None

    def __call__(self, changed: Mapping[str, Mapping[str, int]]) -> None:
        self.notifier.publish(sharing_first(changed))

    def close_connections(self) -> Deferred[Any]:
        """
        End every EventSource response and close every WebSocket; fires
        when they are all gone.
        """
        closing = []
        if self.eventsource is not None:
            closing.append(self.eventsource.close_all())
        if self.websocket is not None:
            closing.append(self.websocket.close_all())
        return DeferredList(closing)


def sharing_first(changed: Mapping[str, Mapping[str, int]]) -> Mapping[str, Mapping[str, int]]:
    """
    C{changed} with the accounts whose sharing changed first (a
    ShareNotification or SharedAccounts state of their own): the
    L{jmapd.push.follow.Follower}s of those users then hold the commit's
    changes of the other accounts until they know which they may report,
    so the commit that revokes an account is not reported in it.
    """
    if all(TRIGGERS.isdisjoint(states) for states in changed.values()):
        return changed
    return dict(sorted(changed.items(), key=lambda item: TRIGGERS.isdisjoint(item[1])))


def hub_for(env: Any) -> PushHub | None:
    """
    The push hub of this environment, if push is installed.
    """
    for listener in env.state_listeners:
        if isinstance(listener, PushHub):
            return listener
    return None


def ensure_hub(env: Any, reactor: Any, clock: Any = None, notifier: Any = None) -> PushHub:
    """
    The environment's hub, made and registered on first use.
    """
    hub = hub_for(env)
    if hub is None:
        hub = PushHub(env, reactor, clock if clock is not None else env.clock, notifier)
        env.state_listeners.append(hub)
    return hub
