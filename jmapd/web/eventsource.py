# -*- test-case-name: tests.web.test_eventsource -*-
"""
The event-source resource (RFC 8620 section 7.3): a long-running GET that
streams C{state} events as C{text/event-stream}.

Each event is written to the transport the moment it is made (the Site
sets TCP_NODELAY, and the headers tell proxies not to buffer), at most one
per C{event-source-throttle} (L{ThrottledChannel}).  After every state
event the C{id} encodes the modseq of each of the user's accounts, and so
does a first id-only message on connection: a client that reconnects with
C{Last-Event-ID} is sent at once the types that changed since.

The accounts it reports are those of the user's Session, kept current
while it is open by a L{Follower}: a share, a revocation or a change of
the user's subscriptions takes effect without reconnecting.

Before each state event the stream checks, in one database read, that the
credentials it was opened with are still valid (L{_EventStream.authorize}):
a revoked token or a changed password ends it at its next event, even when
C{jmapd-admin} made the change from another process, instead of telling a
client that lost its access when the account changes for as long as it
stays connected.

An idle connection holds one L{_EventStream}, its L{Follower}, its ping
timer and one entry in the notifier per account; all of them go when the
client does (C{notifyFinish}).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson
from twisted.internet.defer import Deferred, DeferredList, ensureDeferred, succeed
from twisted.logger import Logger

from jmapd.push.follow import Follower, snapshot
from jmapd.push.notifier import (
    ThrottledChannel,
    decode_position,
    encode_position,
    state_change,
)
from jmapd.web.auth import run_checked, still_valid
from jmapd.web.resource import AsyncResource, HTTPProblem

log = Logger()

#: The ping interval a client may ask for is clamped to this range (RFC
#: 8620 section 7.3: the minimum may be at most 30, the maximum at least 300).
PING_MIN = 5
PING_MAX = 600

EVENT_STREAM = b"text/event-stream"


def _argument(request: Any, name: bytes, default: bytes) -> bytes:
    values = request.args.get(name)
    if not values:
        return default
    if len(values) > 1:
        raise HTTPProblem(400, f"'{name.decode()}' is given more than once")
    return values[0]  # type: ignore[no-any-return]


def parse_arguments(request: Any) -> tuple[frozenset[str] | None, bool, int]:
    """
    The C{types}, C{closeafter} and C{ping} query arguments, checked.

    @return: the types (C{None} for C{*}), whether to close after a state
        event, and the ping interval in seconds (0 for none).
    @raise HTTPProblem: 400 naming the bad argument.
    """
    raw_types = _argument(request, b"types", b"*").decode("utf-8", "replace")
    if raw_types == "*":
        types = None
    else:
        names = [name.strip() for name in raw_types.split(",")]
        if not all(names) or not all(name.isascii() and name.isprintable() for name in names):
            raise HTTPProblem(400, "'types' must be '*' or a comma-separated list of type names")
        types = frozenset(names)
    closeafter = _argument(request, b"closeafter", b"no")
    if closeafter not in (b"state", b"no"):
        raise HTTPProblem(400, "'closeafter' must be 'state' or 'no'")
    raw_ping = _argument(request, b"ping", b"0")
    if not raw_ping.isdigit() or len(raw_ping) > 9:
        raise HTTPProblem(400, "'ping' must be a number of seconds (0 for no pings)")
    ping = int(raw_ping)
    if ping:
        ping = min(max(ping, PING_MIN), PING_MAX)
    return types, closeafter == b"state", ping


def format_event(event: str | None, data: Any, event_id: str | None = None) -> bytes:
    """
    One server-sent event: C{event}, one C{data} line of JSON (orjson never
    writes a newline) and optionally an C{id}; an id-only message (no
    event) moves the client's last event id without firing anything.
    """
    lines = []
    if event is not None:
        lines.append(b"event: " + event.encode("ascii"))
        lines.append(b"data: " + orjson.dumps(data))
    if event_id is not None:
        lines.append(b"id: " + event_id.encode("ascii"))
    return b"\n".join(lines) + b"\n\n"


class _EventStream:
    """
    One open event-source response.
    """

    __slots__ = (
        "_request", "_clock", "follower", "_closeafter", "_ping", "_ping_call", "channel", "closed", "_done",
        "_authorize", "_sending",
    )

    def __init__(
        self,
        request: Any,
        clock: Any,
        env: Any,
        notifier: Any,
        principal: Any,
        throttle: float,
        types: frozenset[str] | None,
        closeafter: bool,
        ping: int,
        authorize: Any = None,
    ) -> None:
        """
        @param authorize: C{authorize() -> Deferred[bool]}: whether the
            stream's credentials are still valid, asked before each state
            event; the stream ends when they are not.
        """
        self._request = request
        self._authorize = authorize
        #: The state events waiting for their credentials check, in order.
        self._sending: Deferred[None] = succeed(None)
        self._clock = clock
        self._closeafter = closeafter
        self._ping = ping
        self._ping_call: Any = None
        self._done = False
        self.channel = ThrottledChannel(clock, throttle, self._send_state, types)
        #: The accounts reported, and the notifier subscriptions.
        self.follower = Follower(env, notifier, principal, self.channel.add)
        #: Fires when the response is over, whoever ended it.
        self.closed: Deferred[None] = Deferred()

    def start(self, position: Mapping[str, int], missed: Mapping[str, Mapping[str, int]]) -> None:
        """
        Write the headers and the first message: the changes the client
        missed since its Last-Event-ID, or an id-only message.
        """
        request = self._request
        request.setResponseCode(200)
        request.setHeader(b"content-type", EVENT_STREAM)
        request.setHeader(b"cache-control", b"no-cache")
        request.setHeader(b"x-accel-buffering", b"no")
        self.channel.position.update(position)
        for account_id, states in missed.items():
            self.channel.add(account_id, states)
        if self._request.finished:
            return
        if not self.channel.sent_any():
            self._write(format_event(None, None, encode_position(self.channel.position)))

    def _send_state(self, changed: dict[str, dict[str, int]]) -> None:
        event = format_event("state", state_change(changed), encode_position(self.channel.position))
        if self._authorize is None:
            self._deliver(event, True)
            return
        authorize = self._authorize

        def check(_: Any) -> Any:
            if self._done or self._request.finished:
                return False
            return authorize()

        def failed(failure: Any) -> bool:
            log.failure("EventSource: cannot check the credentials; the stream ends", failure)
            return False

        self._sending.addCallback(check).addErrback(failed).addCallback(lambda valid: self._deliver(event, valid))

    def _deliver(self, event: bytes, valid: bool) -> None:
        if not valid:
            log.info("EventSource: the credentials changed; the stream ends")
            self.finish(drop=True)
            return
        self._write(event)
        if self._closeafter:
            self.finish()

    def _send_ping(self) -> None:
        self._ping_call = None
        self._write(format_event("ping", {"interval": self._ping}))

    def _write(self, data: bytes) -> None:
        if self._done or self._request.finished:
            return
        self._request.write(data)
        if self._ping:
            if self._ping_call is not None and self._ping_call.active():
                self._ping_call.reset(self._ping)
            else:
                self._ping_call = self._clock.callLater(self._ping, self._send_ping)

    def finish(self, drop: bool = False) -> None:
        """
        End the response (closeafter=state, or shutdown with C{drop}, which
        also closes the connection so a keep-alive client does not linger).
        """
        if self._done or self._request.finished:
            return
        channel = self._request.channel
        self._request.finish()
        if drop and channel is not None:
            channel.loseConnection()

    def gone(self, reason: Any = None) -> None:
        """
        The response is over: release everything the connection held.
        """
        if self._done:
            return
        self._done = True
        self.follower.close()
        self.channel.close()
        if self._ping_call is not None and self._ping_call.active():
            self._ping_call.cancel()
        self._ping_call = None
        self.closed.callback(None)


class EventSourceResource(AsyncResource):
    """
    GET C{/jmap/eventsource/?types=...&closeafter=...&ping=...}.

    @ivar streams: the open responses.
    """

    def __init__(self, env: Any, authenticator: Any, notifier: Any, clock: Any) -> None:
        super().__init__()
        self._env = env
        self._auth = authenticator
        self._notifier = notifier
        self._clock = clock
        self.streams: set[_EventStream] = set()

    async def handle_GET(self, request: Any) -> None:
        login = await self._auth.authenticate(request)
        types, closeafter, ping = parse_arguments(request)
        if request.method == b"HEAD":
            request.setResponseCode(200)
            request.setHeader(b"content-type", EVENT_STREAM)
            request.finish()
            return
        header = request.getHeader(b"last-event-id")
        last = decode_position(header.decode("latin-1") if isinstance(header, bytes) else header)
        env = self._env
        held = self._auth.hold(request)
        current = login

        async def authorize() -> bool:
            nonlocal current
            renewed = await still_valid(env.database, current, lambda: self._auth.login_again(held))
            if renewed is None:
                return False
            current = renewed
            return True

        stream = _EventStream(
            request,
            self._clock,
            env,
            self._notifier,
            login.principal,
            env.config.event_source_throttle,
            types,
            closeafter,
            ping,
            lambda: ensureDeferred(authorize()),
        )
        # Hold every change before reading the states, so no commit falls
        # between the snapshot and the subscriptions; what comes early is
        # sorted out by modseq in Follower.start.
        stream.follower.hold()
        try:
            account_ids, position, missed = await run_checked(
                self._auth, env.database, request, login, lambda txn, login: snapshot(env, txn, login.principal, last)
            )
        except BaseException:
            stream.follower.close()
            raise
        if request.finished or getattr(request, "_disconnected", False):
            stream.follower.close()
            return
        self.streams.add(stream)
        request.notifyFinish().addBoth(self._finished, stream)
        stream.start(position, missed)
        stream.follower.start(account_ids, position)
        log.debug(
            "EventSource for {account}: types={types} closeafter={closeafter} ping={ping}",
            account=login.principal.name,
            types="*" if types is None else ",".join(sorted(types)),
            closeafter=closeafter,
            ping=ping,
        )

    def _finished(self, result: Any, stream: _EventStream) -> None:
        self.streams.discard(stream)
        stream.gone()

    def close_all(self) -> Deferred[Any]:
        """
        End every open response (at shutdown); fires when all are over.
        """
        closing = [stream.closed for stream in self.streams]
        for stream in list(self.streams):
            stream.finish(drop=True)
        return DeferredList(closing)

