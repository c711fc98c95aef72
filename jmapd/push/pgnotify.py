# -*- test-case-name: tests.push.test_pgnotify -*-
"""
Push across nodes: several jmapd processes sharing one PostgreSQL database
tell each other about their commits with C{LISTEN}/C{NOTIFY}.

Sending.  L{announce} runs in the committing worker thread just before
C{COMMIT} of every write transaction of the PostgreSQL engine (its
C{before_commit} hook) and sends C{pg_notify(channel, payload)} on the
transaction's own connection.  PostgreSQL delivers a notification only
if its transaction commits, and delivers them in commit order, so a
notification exists if and only if the change does: a node that dies
between its commit and its own after-commit callbacks still tells the
others.  The payload is JSON: the sender (node-id plus a per-process
random suffix, since two processes on one host share the default node-id)
and C{{accountId: {type: modseq}}}.  A payload must stay under 8000 bytes,
so a large commit is split into several notifications by account, and an
account whose states alone would not fit is announced by id only
(C{"accounts": [...]}); the receiver then reads its states.  Committing
NOTIFY transactions take turns on PostgreSQL's notification queue lock
for an instant; one JMAP request or LMTP batch is one transaction, so
this is one short wait per write.

Receiving.  L{PostgresNotifier} keeps one dedicated connection (not one
of the request pool's) on which it ran C{LISTEN}.  The socket is watched
by the reactor (an L{IReadDescriptor}): when it is readable, libpq
consumes what arrived without blocking and the notifications are fanned
out right there, on the reactor thread where subscribers expect to be
called.  A thread blocked in C{notifies()} would hold a thread for the
whole life of the service, would need a wake-up trick (a timeout poll or
a self-pipe) to stop promptly, and would still have to hop to the
reactor for every notification; watching the descriptor costs nothing
while idle and stops at once.  Only the blocking steps, connecting and
C{LISTEN}, run in the worker pool.

Losing the connection (server restart, network failure: TCP keepalives
notice a silent one) is logged, and the notifier connects again after a
backoff (L{BACKOFF_FIRST} doubling to L{BACKOFF_MAX} seconds, on the
injected clock).  Nothing is lost silently: every account's newest modseq
seen so far is remembered, and after each new C{LISTEN} the notifier
reads the accounts' modseqs and, for each subscribed account that moved
meanwhile, the types that changed (L{jmapd.push.notifier.missed_states},
the same catch-up a reconnecting EventSource client gets), and fans them
out like any notification.  That memory is one integer per account, read
in one query per (re)connection.  The first C{LISTEN} after start-up has
no earlier position to compare with: a client that connected to this
node before it (a moment after start-up, or while PostgreSQL was
unreachable) learns other nodes' earlier changes at its next request.

Only processes that make a L{PostgresNotifier} announce their commits:
C{jmapd-admin} does not, so its changes reach clients at their next
request, as on a single server.

Who gets what.  Per-account subscribers (EventSource streams, WebSockets
with push enabled) get every node's changes.  Subscribers to every
account (C{None}: the PushSubscription delivery, which runs on each node)
get only this process's own commits: each change is POSTed to a push
service once, by the node that made it, not once per node.

Caches need no notifications.  Each cache is keyed or checked by a
counter read in the transaction that uses it, so a change committed by
any node is seen on the next request of every node:
 - C{sharings} and C{acl} (L{jmapd.sharing}): keyed by the C{acl} counter
   that every change of a grant, group or subscription raises;
 - C{ids} (L{jmapd.protocol.caching}): keyed by the account's states;
 - verified credentials (L{jmapd.web.auth}): each request checks the
   account's auth version inside its own transaction;
 - C{recipients} (L{jmapd.ingest.recipients}): unknown addresses are never
   cached, so a new alias is found at once; a removed or moved one is
   resolved again in the filing transaction, so mail goes where it would
   with the cache off (a removed alias gets its 550 after DATA).
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import orjson
import psycopg
from attrs import frozen
from psycopg import pq
from twisted.application.service import Service
from twisted.internet.defer import Deferred, DeferredList
from twisted.internet.interfaces import IReadDescriptor
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from jmapd.push.hub import sharing_first
from jmapd.push.notifier import SUBSCRIPTIONS_CHANGED, INotifier, Listener, LocalNotifier, missed_states
from jmapd.storage import changelog

log = Logger()

#: The channel every node listens on (notifications are per database, so
#: clusters on different databases of one server do not hear each other).
CHANNEL = "jmapd_state_change"

#: PostgreSQL refuses payloads of 8000 bytes or more.
PAYLOAD_LIMIT = 7999

#: Reconnection delays, in seconds.
BACKOFF_FIRST = 0.5
BACKOFF_MAX = 30.0

_CONNECT_TIMEOUT = 10


@frozen
class Notification:
    """
    One decoded payload.

    @ivar changed: C{{accountId: {type: modseq}}}.
    @ivar accounts: accounts that changed whose states were too large to
        send: read them.
    @ivar subscriptions: accounts whose PushSubscriptions changed.
    """

    node: str
    sender: str
    changed: dict[str, dict[str, int]]
    accounts: tuple[str, ...] = ()
    #: Accounts whose PushSubscriptions changed (verified, updated,
    #: destroyed): every node's PushSubscription delivery reads them again.
    subscriptions: tuple[str, ...] = ()


def encode_notifications(
    node: str,
    sender: str,
    changed: Mapping[str, Mapping[str, int]],
    limit: int = PAYLOAD_LIMIT,
    subscriptions: Sequence[str] = (),
) -> list[bytes]:
    """
    The payloads announcing C{changed}, each at most C{limit} bytes: the
    accounts packed into as few as fit, in their order (PostgreSQL keeps
    the order of one transaction's notifications), and those too large
    for any payload by id only, last.
    """
    head = orjson.dumps({"node": node, "sender": sender, "changed": {}})
    payloads: list[bytes] = []
    entries: list[bytes] = []
    size = len(head)
    too_large: list[str] = []

    def flush_entries() -> None:
        nonlocal entries, size
        if entries:
            payloads.append(head[:-2] + b",".join(entries) + b"}}")
        entries, size = [], len(head)

    for account_id, states in changed.items():
        if not states:
            continue
        # {"id":{...}} without its braces is the member to add.
        entry = orjson.dumps({account_id: dict(states)})[1:-1]
        if len(head) + len(entry) > limit:
            too_large.append(account_id)
            continue
        if size + len(entry) + 1 > limit:
            flush_entries()
        entries.append(entry)
        size += len(entry) + 1
    flush_entries()
    payloads.extend(_id_lists(node, sender, "accounts", too_large, limit))
    payloads.extend(_id_lists(node, sender, "subscriptions", subscriptions, limit))
    return payloads


def _id_lists(node: str, sender: str, key: str, ids: Sequence[str], limit: int) -> list[bytes]:
    """
    Payloads C{{"node", "sender", key: [ids...]}}, each within C{limit}.
    """
    head = orjson.dumps({"node": node, "sender": sender, key: []})
    payloads: list[bytes] = []
    batch: list[str] = []
    for account_id in ids:
        if batch and len(head) + len(orjson.dumps(batch + [account_id])) - 2 > limit:
            payloads.append(orjson.dumps({"node": node, "sender": sender, key: batch}))
            batch = []
        batch.append(account_id)
    if batch:
        payloads.append(orjson.dumps({"node": node, "sender": sender, key: batch}))
    return payloads


def decode_notification(payload: bytes | str) -> Notification | None:
    """
    The notification in C{payload}, or C{None} when it is not one of ours.
    """
    try:
        data = orjson.loads(payload)
        changed = {
            str(account_id): {str(name): int(modseq) for name, modseq in states.items()}
            for account_id, states in data.get("changed", {}).items()
        }
        accounts = tuple(str(account_id) for account_id in data.get("accounts", ()))
        subscriptions = tuple(str(account_id) for account_id in data.get("subscriptions", ()))
        return Notification(str(data.get("node", "")), str(data["sender"]), changed, accounts, subscriptions)
    except (orjson.JSONDecodeError, AttributeError, KeyError, TypeError, ValueError):
        return None


def announce(txn: Any, node: str, sender: str) -> None:
    """
    Send the NOTIFYs for what C{txn} changed, inside C{txn} (the engine's
    C{before_commit} hook, in the committing thread).
    """
    changed = txn.__dict__.get("changed_states") or {}
    subscriptions = sorted(txn.__dict__.get(SUBSCRIPTIONS_CHANGED) or ())
    if not changed and not subscriptions:
        return
    # In the order the hub publishes local commits in, so that the other
    # nodes' push channels see a commit's changes in the same order.
    for payload in encode_notifications(
        node, sender, sharing_first(changed), subscriptions=subscriptions
    ):
        txn.execute("SELECT pg_notify(?, ?)", (CHANNEL, payload.decode("utf-8")))


def _modseqs(txn: Any) -> dict[str, int]:
    """
    Every account's modseq now.
    """
    txn.flush()
    return {str(row[0]): int(row[1]) for row in txn.fetchall("SELECT id, modseq FROM accounts")}


def _read_states(txn: Any, account_ids: tuple[str, ...]) -> dict[str, dict[str, int]]:
    return {account_id: changelog.get_states(txn, account_id) for account_id in account_ids}


@implementer(IReadDescriptor)
class _Socket:
    """
    The LISTEN connection's socket as the reactor watches it.
    """

    def __init__(self, fd: int, readable: Callable[[], None], lost: Callable[[Failure], None]) -> None:
        self._fd = fd
        self._readable = readable
        self._lost = lost

    def fileno(self) -> int:
        return self._fd

    def doRead(self) -> None:
        self._readable()

    def connectionLost(self, reason: Failure) -> None:
        self._lost(reason)

    def logPrefix(self) -> str:
        return "jmapd-listen"


@implementer(INotifier)
class PostgresNotifier(Service):
    """
    The notifier of a node sharing a PostgreSQL database: local commits
    are fanned out at once, other nodes' commits arrive by C{LISTEN}.

    Start it after the worker pool and stop it before (it connects in a
    worker thread).  Making it installs L{announce} on the engine, so every
    write transaction of this process sends its notifications, even those
    that commit while the service is stopping.

    @param database: the L{jmapd.storage.database.Database} on the
        PostgreSQL engine.
    @param clock: times the reconnection backoff.
    @param node_id: this node's name (in payloads and log messages).

    @ivar observers: called with C{"listening"}, C{"lost"}, C{"cannot
        connect"} or C{"caught up"} as the LISTEN connection comes, goes,
        fails to come, and its catch-up has been fanned out (for tests and
        metrics).
    """

    name = "push-notify"

    def __init__(self, database: Any, reactor: Any, clock: Any = None, node_id: str = "") -> None:
        self._database = database
        self._reactor = reactor
        self._clock = clock if clock is not None else reactor
        self.node_id = node_id
        self.sender = f"{node_id}/{_random_suffix()}"
        # Per-account subscribers hear every node; subscribers to every
        # account hear this process's commits only (see the module).
        self._accounts = LocalNotifier()
        self._everyone = LocalNotifier()
        self._seen: dict[str, int] = {}
        self._caught_up = False
        self._conn: Any = None
        self._socket: _Socket | None = None
        self._delay = BACKOFF_FIRST
        self._timer: Any = None
        self._pending: set[Deferred[Any]] = set()
        self.observers: list[Callable[[str], None]] = []
        #: Called with an account id when another node changed the
        #: account's PushSubscriptions.
        self.subscription_listeners: list[Callable[[str], None]] = []
        node, sender = self.node_id, self.sender
        database.engine.before_commit = lambda txn: announce(txn, node, sender)

    # -- INotifier --

    def subscribe(self, account_id: str | None, callback: Listener) -> None:
        (self._everyone if account_id is None else self._accounts).subscribe(account_id, callback)

    def unsubscribe(self, account_id: str | None, callback: Listener) -> None:
        (self._everyone if account_id is None else self._accounts).unsubscribe(account_id, callback)

    def listening(self, account_id: str | None) -> int:
        """
        How many listeners C{account_id} has (for tests and metrics).
        """
        return (self._everyone if account_id is None else self._accounts).listening(account_id)

    def publish(self, changed: Mapping[str, Mapping[str, int]]) -> None:
        """
        This process committed C{changed} (its NOTIFY went out with the
        commit): tell the local subscribers.
        """
        self._note(changed)
        self._accounts.publish(changed)
        self._everyone.publish(changed)

    __call__ = publish

    def _note(self, changed: Mapping[str, Mapping[str, int]]) -> None:
        for account_id, states in changed.items():
            newest = max(states.values(), default=0)
            if newest > self._seen.get(account_id, 0):
                self._seen[account_id] = newest

    def _remote(self, changed: Mapping[str, Mapping[str, int]]) -> None:
        self._note(changed)
        self._accounts.publish(changed)

    # -- the service --

    def startService(self) -> None:
        Service.startService(self)
        self._delay = BACKOFF_FIRST
        self._connect()

    def stopService(self) -> Deferred[Any]:
        Service.stopService(self)
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        self._disconnect()
        # A connect or read in a worker thread finishes, then sees that
        # the service stopped and closes what it opened.
        pending = [_observe(d) for d in self._pending]
        return DeferredList(pending).addCallback(lambda _: None)

    def _track(self, d: Deferred[Any]) -> Deferred[Any]:
        self._pending.add(d)

        def done(result: Any) -> Any:
            self._pending.discard(d)
            return result

        return d.addBoth(done)

    def _notify_observers(self, event: str) -> None:
        for observer in list(self.observers):
            observer(event)

    def _open(self) -> Any:
        """
        In a worker thread: a new connection that LISTENs.
        """
        engine = self._database.engine
        conn = psycopg.connect(
            engine.url,
            autocommit=True,
            connect_timeout=_CONNECT_TIMEOUT,
            application_name=f"jmapd {self.node_id} listen".replace("  ", " ")[:63],
            keepalives=1,
            keepalives_idle=30,
            keepalives_interval=10,
            keepalives_count=3,
        )
        try:
            conn.execute(f"LISTEN {CHANNEL}")
        except BaseException:
            conn.close()
            raise
        return conn

    def _connect(self) -> None:
        self._timer = None
        if not self.running:
            return
        d = self._track(self._database.run_in_thread(self._open))
        d.addCallbacks(self._opened, self._not_opened)
        d.addErrback(self._broken)

    def _broken(self, failure: Failure) -> None:
        """
        A bug on the way to listening: log it, and start again later
        rather than stop listening for good.
        """
        log.failure("push: setting up the LISTEN connection failed", failure)
        if self.running:
            self._lost(_one_line(failure.value))

    def _opened(self, conn: Any) -> None:
        if not self.running:
            conn.close()
            return
        self._conn = conn
        # The reactor watches a duplicate of the socket: libpq closes its
        # own descriptor when the server goes away, before we can stop
        # watching it.
        self._socket = _Socket(os.dup(conn.fileno()), self._readable, self._socket_lost)
        self._reactor.addReader(self._socket)
        self._delay = BACKOFF_FIRST
        log.info(
            "push: listening for other nodes' changes on {channel} as {sender}",
            channel=CHANNEL,
            sender=self.sender,
        )
        self._notify_observers("listening")
        # What arrived with LISTEN's reply; later ones make the socket readable.
        self._readable()
        d = self._track(self._database.run_interaction(_modseqs))
        d.addCallback(self._catch_up)
        d.addErrback(self._catch_up_failed)

    def _catch_up(self, current: dict[str, int]) -> Deferred[None] | None:
        """
        Read after LISTEN took effect, C{current} holds every commit the
        notifications will not bring.  The first time it is where the
        notifier starts from; after a reconnection, the subscribed
        accounts that moved since the last notification get the states
        they missed, read as a reconnecting EventSource client gets them.
        """
        if not self.running:
            return None
        first = not self._caught_up
        self._caught_up = True
        position = {
            account_id: self._seen.get(account_id, 0)
            for account_id, modseq in current.items()
            if modseq > self._seen.get(account_id, 0)
        }
        for account_id, modseq in current.items():
            if modseq > self._seen.get(account_id, 0):
                self._seen[account_id] = modseq
        wanted = {a: since for a, since in position.items() if self._accounts.listening(a)}
        if first or not wanted:
            self._notify_observers("caught up")
            return None

        def missed(found: dict[str, dict[str, int]]) -> None:
            if found:
                log.info(
                    "push: {count} subscribed accounts changed while the LISTEN connection was down;"
                    " pushing their states",
                    count=len(found),
                )
                self._remote(found)
            self._notify_observers("caught up")

        return self._track(self._database.run_interaction(missed_states, wanted)).addCallback(missed)

    def _catch_up_failed(self, failure: Failure) -> None:
        if not self.running:
            return
        log.failure("push: cannot read the changes made while the LISTEN connection was down", failure)
        # Read again with the next connection: drop this one.
        if self.running and self._conn is not None:
            self._lost("the catch-up read failed")

    def _not_opened(self, failure: Failure) -> None:
        if not self.running:
            return
        log.warn(
            "push: cannot LISTEN for other nodes' changes: {error}; trying again in {delay:.1f} s",
            error=_one_line(failure.value),
            delay=self._delay,
        )
        self._schedule()
        self._notify_observers("cannot connect")

    def _schedule(self) -> None:
        delay = self._delay
        self._delay = min(self._delay * 2, BACKOFF_MAX)
        self._timer = self._clock.callLater(delay, self._connect)

    def _readable(self) -> None:
        conn = self._conn
        if conn is None:
            return
        pgconn = conn.pgconn
        try:
            pgconn.consume_input()
        except psycopg.Error as error:
            self._lost(_one_line(error))
            return
        if pgconn.status != pq.ConnStatus.OK:
            self._lost("the connection is no longer usable")
            return
        while True:
            found = pgconn.notifies()
            if found is None:
                break
            if found.relname.decode() != CHANNEL:
                continue
            self._received(found.extra)

    def _received(self, payload: bytes) -> None:
        notification = decode_notification(payload)
        if notification is None:
            log.warn("push: ignoring a notification that is not ours: {payload!r}", payload=payload[:200])
            return
        if notification.sender == self.sender:
            return  # publish() fanned it out already.
        if notification.changed:
            self._remote(notification.changed)
        for account_id in notification.subscriptions:
            for listener in list(self.subscription_listeners):
                listener(account_id)
        wanted = tuple(a for a in notification.accounts if self._accounts.listening(a))
        if wanted and self.running:
            d = self._track(self._database.run_interaction(_read_states, wanted))
            d.addCallback(self._remote)
            d.addErrback(lambda f: log.failure("push: cannot read the states of {accounts}", f, accounts=wanted))

    def _socket_lost(self, reason: Failure) -> None:
        self._lost(_one_line(reason.value))

    def _lost(self, why: str) -> None:
        """
        The LISTEN connection broke: log it, close it, connect again later.
        """
        self._disconnect()
        log.warn(
            "push: lost the LISTEN connection ({error}); reconnecting in {delay:.1f} s,"
            " then pushing what changed meanwhile",
            error=why,
            delay=self._delay,
        )
        if self.running:
            self._schedule()
        self._notify_observers("lost")

    def _disconnect(self) -> None:
        if self._socket is not None:
            self._reactor.removeReader(self._socket)
            os.close(self._socket.fileno())
            self._socket = None
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.close()
            except Exception:
                pass


def _random_suffix() -> str:
    return secrets.token_hex(6)


def _one_line(error: BaseException | None) -> str:
    return " ".join(str(error).split()) or type(error).__name__


def _observe(d: Deferred[Any]) -> Deferred[None]:
    """
    A Deferred firing when C{d} does, without taking its result.
    """
    observer: Deferred[None] = Deferred()

    def fire(result: Any) -> Any:
        if not observer.called:
            observer.callback(None)
        return result

    d.addBoth(fire)
    return observer


__all__ = ["CHANNEL", "PostgresNotifier", "announce", "decode_notification", "encode_notifications"]
