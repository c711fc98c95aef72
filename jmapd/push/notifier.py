# -*- test-case-name: tests.push.test_notifier -*-
"""
The StateChange fan-out (RFC 8620 section 7.1).

Every committed transaction that changed data hands C{{accountId: {type:
modseq}}} to L{INotifier.publish} on the reactor thread (the environment's
C{state_listeners}, fed by C{Transaction.after_commit}).  A push channel
(an EventSource response, a WebSocket with push enabled, the
PushSubscription delivery) subscribes to the accounts it serves and gets
each account's changed states.

L{LocalNotifier} fans out within one process.  Several jmapd nodes sharing
one PostgreSQL database need a notifier whose C{publish} also sends a
C{NOTIFY} and which calls its subscribers for the other nodes' changes
too; it provides the same L{INotifier}, so nothing else changes.

A type's state string is C{str(modseq)} of its last change (as
L{jmapd.protocol.standard.DataType.state} says), so notifiers pass modseqs
and the StateChange object is made at the edge by L{state_change}.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

from twisted.logger import Logger
from zope.interface import Interface, implementer

from jmapd.storage import changelog

log = Logger()

#: The pseudo-type pushed with "Email" when a message was delivered (not
#: moved, imported or changed by the user): RFC 8621 section 1.5.
EMAIL_DELIVERY = "EmailDelivery"

#: The transaction attribute naming the accounts whose PushSubscriptions
#: the transaction changed (see L{subscriptions_changed}).
SUBSCRIPTIONS_CHANGED = "push_subscriptions_changed"

#: C{callback(account_id, {type: modseq})}.
Listener = Callable[[str, Mapping[str, int]], None]


class INotifier(Interface):
    """
    Fan committed state changes out to the push channels of the accounts.
    """

    def subscribe(account_id: str | None, callback: Listener) -> None:
        """
        Call C{callback(account_id, states)} on the reactor thread for every
        committed change of C{account_id} (of every account for C{None}),
        with the new modseq of each changed type.
        """

    def unsubscribe(account_id: str | None, callback: Listener) -> None:
        """
        Stop calling C{callback} for C{account_id}; unknown pairs are
        ignored, so cleanup code may call it twice.
        """

    def publish(changed: Mapping[str, Mapping[str, int]]) -> None:
        """
        Announce committed changes C{{accountId: {type: modseq}}}; called
        on the reactor thread after the commit.
        """


@implementer(INotifier)
class LocalNotifier:
    """
    The in-process notifier: a dictionary of listeners per account.  An
    idle push connection costs one entry in one set.
    """

    def __init__(self) -> None:
        self._listeners: dict[str | None, set[Listener]] = {}

    def subscribe(self, account_id: str | None, callback: Listener) -> None:
        self._listeners.setdefault(account_id, set()).add(callback)

    def unsubscribe(self, account_id: str | None, callback: Listener) -> None:
        listeners = self._listeners.get(account_id)
        if listeners is None:
            return
        listeners.discard(callback)
        if not listeners:
            del self._listeners[account_id]

    def listening(self, account_id: str | None) -> int:
        """
        How many listeners C{account_id} has (for tests and metrics).
        """
        return len(self._listeners.get(account_id, ()))

    def publish(self, changed: Mapping[str, Mapping[str, int]]) -> None:
        everyone = self._listeners.get(None, ())
        for account_id, states in changed.items():
            if not states:
                continue
            for callback in [*self._listeners.get(account_id, ()), *everyone]:
                try:
                    callback(account_id, states)
                except Exception:
                    log.failure("push listener failed for {account}", account=account_id)

    # The Environment's state_listeners are plain callables.
    __call__ = publish


def record_delivery(txn: Any, account_id: str) -> int:
    """
    The hook for mail delivery (LMTP): call it in the transaction that
    stored a delivered message, after the Email changes, so the StateChange
    of that commit also carries C{EmailDelivery} (RFC 8621 section 1.5).
    The pseudo-type gets a state of its own in the states table, so
    Last-Event-ID and pushState replays report it like any type.
    """
    return changelog.touch_state(txn, account_id, EMAIL_DELIVERY)


def state_change(changed: Mapping[str, Mapping[str, int]]) -> dict[str, Any]:
    """
    The StateChange object for C{{accountId: {type: modseq}}}.
    """
    return {
        "@type": "StateChange",
        "changed": {
            account_id: {name: str(modseq) for name, modseq in sorted(states.items())}
            for account_id, states in sorted(changed.items())
        },
    }


def encode_position(position: Mapping[str, int]) -> str:
    """
    A string naming the whole state the user saw: the modseq of each
    account, C{"a1:42,a2:7"}.  It is the EventSource event id and the
    WebSocket pushState; L{decode_position} reads it back.
    """
    return ",".join(f"{account_id}:{modseq}" for account_id, modseq in sorted(position.items()))


def decode_position(text: str | None) -> dict[str, int] | None:
    """
    The position in an event id or pushState, or C{None} when C{text} is
    not one of ours (the client then gets no replay).
    """
    if not text:
        return None
    position: dict[str, int] = {}
    for part in text.split(","):
        account_id, colon, modseq = part.strip().partition(":")
        if not colon or not account_id or not modseq.isascii() or not modseq.isdigit() or len(modseq) > 18:
            return None
        position[account_id] = int(modseq)
    return position


def account_modseqs(txn: Any, account_ids: Iterable[str]) -> dict[str, int]:
    """
    The current modseq of each account (its whole state), in C{txn}.
    """
    txn.flush()
    return {
        account_id: int(txn.fetchvalue("SELECT modseq FROM accounts WHERE id = ?", (account_id,), 0))
        for account_id in account_ids
    }


def missed_states(txn: Any, position: Mapping[str, int]) -> dict[str, dict[str, int]]:
    """
    The types of each account that changed after C{position} (what a
    client that reconnects with that event id or pushState has missed),
    with their current modseqs.
    """
    txn.flush()
    missed: dict[str, dict[str, int]] = {}
    for account_id, since in position.items():
        rows = txn.fetchall(
            "SELECT type, modseq FROM states WHERE account_id = ? AND modseq > ?", (account_id, since)
        )
        if rows:
            missed[account_id] = {row[0]: int(row[1]) for row in rows}
    return missed


class ThrottledChannel:
    """
    One push connection's view of the changes: what it has not sent yet,
    coalesced, and sent at most once per C{throttle} seconds.

    The first change after a quiet period goes out at once; changes that
    come within C{throttle} of the last event wait for one event at the end
    of the interval that carries the newest state of every changed type.
    A state that went out of order (two commits whose callbacks swapped)
    costs the client one needless /changes call at worst, so states are
    merged by taking the larger modseq.

    @ivar position: the newest modseq seen per account, of any type: what
        the client has been told about once the pending changes are sent.
    """

    __slots__ = ("_clock", "_throttle", "_send", "_types", "_pending", "_last_sent", "_timer", "_closed", "position")

    def __init__(
        self,
        clock: Any,
        throttle: float,
        send: Callable[[dict[str, dict[str, int]]], None],
        types: frozenset[str] | None = None,
    ) -> None:
        self._clock = clock
        self._throttle = throttle
        self._send = send
        self._types = types
        self._pending: dict[str, dict[str, int]] | None = None
        self._last_sent: float | None = None
        self._timer: Any = None
        self._closed = False
        self.position: dict[str, int] = {}

    @property
    def types(self) -> frozenset[str] | None:
        return self._types

    def set_types(self, types: frozenset[str] | None) -> None:
        """
        Push only these types from now on (C{None}: all).
        """
        self._types = types

    def sent_any(self) -> bool:
        """
        Whether an event went out on this channel yet.
        """
        return self._last_sent is not None

    def add(self, account_id: str, states: Mapping[str, int]) -> None:
        """
        Take the changed states of one account (a notifier callback).
        """
        newest = max(states.values(), default=0)
        if newest > self.position.get(account_id, 0):
            self.position[account_id] = newest
        wanted = {name: modseq for name, modseq in states.items() if self._types is None or name in self._types}
        if not wanted or self._closed:
            return
        if self._pending is None:
            self._pending = {}
        pending = self._pending.setdefault(account_id, {})
        for name, modseq in wanted.items():
            if modseq > pending.get(name, 0):
                pending[name] = modseq
        if self._timer is not None:
            return
        now = float(self._clock.seconds())
        if self._last_sent is None or now - self._last_sent >= self._throttle:
            self.flush()
        else:
            self._timer = self._clock.callLater(self._last_sent + self._throttle - now, self.flush)

    def flush(self) -> None:
        """
        Send what is pending now.
        """
        if self._timer is not None:
            if self._timer.active():
                self._timer.cancel()
            self._timer = None
        pending, self._pending = self._pending, None
        if not pending:
            return
        self._last_sent = float(self._clock.seconds())
        self._send(pending)

    def close(self) -> None:
        """
        Forget what is pending and stop the timer (the connection is gone);
        later changes are ignored.
        """
        self._closed = True
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        self._pending = None


def subscriptions_changed(txn: Any, account_id: str) -> None:
    """
    Inside a transaction that verifies, changes or destroys PushSubscriptions
    of C{account_id}: when it commits, the PushSubscription deliveries of
    the other nodes read them again (a notifier across nodes announces it
    with the commit; PushSubscriptions have no state of their own).
    """
    # A writer of the account (on PostgreSQL, what makes the commit
    # announce itself).
    txn.lock_account(account_id)
    txn.__dict__.setdefault(SUBSCRIPTIONS_CHANGED, set()).add(account_id)
