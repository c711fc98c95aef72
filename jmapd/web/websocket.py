# -*- test-case-name: tests.web.test_websocket -*-
"""
JMAP over WebSocket (RFC 8887) at C{/jmap/ws}, with autobahn.

The upgrade request goes through the resource tree like any request:
L{WebSocketUpgradeResource} checks the C{jmap} subprotocol, the Origin
(always against C{cors-allowed-origins}) and the credentials (the same
L{Authenticator} as the API) before autobahn takes the connection over, so
an unauthenticated client never gets a WebSocket.

On the socket, each text message is one JSON object with an C{@type}:

- C{Request}: a JMAP Request with an optional C{id}; it runs through the
  same engine as HTTP POST (L{run_request}) and its C{Response} (or
  C{RequestError}) carries C{requestId}.  Requests run concurrently, up
  to C{max-concurrent-requests} per connection.
- C{WebSocketPushEnable}: push StateChange objects (with C{pushState}) for
  C{dataTypes}; a C{pushState} from an earlier connection replays what
  changed since at once.  The accounts pushed are those of the user's
  Session, kept current while push is on (L{Follower}).
- C{WebSocketPushDisable}: stop pushing.

Pings go out every C{ws-heartbeat-interval} seconds and a client that
does not answer within C{ws-client-timeout} seconds is dropped, on the
injected clock (not autobahn's auto-ping, whose timers are rounded down to
whole seconds).
"""

from __future__ import annotations

import functools
import os
from collections.abc import Mapping
from typing import Any

import orjson
from autobahn.twisted.resource import WebSocketResource
from autobahn.twisted.websocket import WebSocketServerFactory, WebSocketServerProtocol
from autobahn.websocket.types import ConnectionDeny
from twisted.internet.defer import Deferred, DeferredList, ensureDeferred, succeed
from twisted.internet.protocol import connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET

from jmapd.protocol.engine import execute
from jmapd.protocol.errors import RequestError, limit, not_json, not_request
from jmapd.protocol.request import Request, check_depth, parse_request
from jmapd.protocol.session import session_state
from jmapd.push.follow import Follower, snapshot
from jmapd.push.notifier import (
    ThrottledChannel,
    decode_position,
    encode_position,
    state_change,
)
from jmapd.web.auth import AuthVersionChanged, check_auth_version, still_valid
from jmapd.web.cors import CORSPolicy
from jmapd.web.resource import HTTPProblem, write_problem

log = Logger()

SUBPROTOCOL = "jmap"

#: The close code for credentials that changed while connected (RFC 6455:
#: policy violation); the client connects again with its new credentials.
CLOSE_POLICY = 1008
CLOSE_GOING_AWAY = 1001


def run_request(env: Any, login: Any, request: Request, extra: Mapping[str, Any] | None = None) -> Deferred[bytes]:
    """
    Run a parsed JMAP Request for C{login} in one transaction, exactly as
    the HTTP API does, and return the encoded Response with C{extra}
    members added (C{@type} and C{requestId} on a WebSocket).

    The changed states are published after the commit.

    @raise AuthVersionChanged: (in the Deferred) the credentials changed
        since C{login} was verified.
    """

    def run(txn: Any, login: Any) -> bytes:
        check_auth_version(txn, login)
        state = session_state(env, txn, login.principal)
        response = execute(txn, env, login.principal, request, state)
        changed = txn.__dict__.get("changed_states")
        if changed:
            txn.after_commit(lambda: env.publish_states(changed))
        if extra:
            response = {**extra, **response}
        return orjson.dumps(response)

    return env.database.run_interaction(run, login, write=env.registry.is_write(request))


def _request_error(error: RequestError, request_id: Any) -> bytes:
    body: dict[str, Any] = {"@type": "RequestError"}
    if request_id is not None:
        body["requestId"] = request_id
    body.update(error.problem())
    return orjson.dumps(body)


class JMAPWebSocketProtocol(WebSocketServerProtocol):
    """
    One JMAP WebSocket connection of an authenticated user.
    """

    login: Any = None
    #: C{async () -> Login}: verify the upgrade request's credentials again.
    relogin: Any = None

    def __init__(self) -> None:
        super().__init__()
        self._inflight = 0
        self._too_big = False
        self._channel: ThrottledChannel | None = None
        self._follower: Follower | None = None
        self._open = False
        self._ping_call: Any = None
        self._pong_timer: Any = None
        self._ping_payload: bytes | None = None
        #: The pushes waiting for their credentials check, in order.
        self._pushing: Deferred[None] = succeed(None)
        self.closed: Deferred[None] = Deferred()

    # -- handshake --

    def onConnect(self, request: Any) -> str:
        if SUBPROTOCOL not in request.protocols:
            raise ConnectionDeny(ConnectionDeny.BAD_REQUEST, "the 'jmap' WebSocket subprotocol is required")
        if self.login is None:
            raise ConnectionDeny(401, "authentication is required")
        return SUBPROTOCOL

    def onOpen(self) -> None:
        self._open = True
        self.factory.connections.add(self)
        self._schedule_ping()
        log.debug("WebSocket open for {account}", account=self.login.principal.name)

    def onClose(self, wasClean: bool, code: Any, reason: Any) -> None:
        self._open = False
        self._stop_pings()
        self.factory.connections.discard(self)
        self._push_off()
        if not self.closed.called:
            self.closed.callback(None)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        super().connectionLost(reason)
        self._stop_pings()
        if not self.closed.called:
            self._push_off()
            self.factory.connections.discard(self)
            self.closed.callback(None)

    def close_with(self, code: int, reason: str) -> None:
        """
        Start the closing handshake with a standard close code (autobahn's
        C{sendClose} only takes 1000 and private codes).
        """
        if self.state == self.STATE_OPEN:
            self.sendCloseFrame(code, reason.encode("utf-8")[:123])

    # -- heartbeat --

    # autobahn's autoPingInterval/autoPingTimeout run on a batched timer
    # that rounds every deadline down to a whole second: a timeout under a
    # second fired at once, before any pong could come back, and dropped
    # every client; longer ones were up to a second short.  These timers run
    # on the factory's clock instead.

    def _schedule_ping(self) -> None:
        interval = self.factory.env.config.ws_heartbeat_interval
        if interval > 0 and self._open:
            self._ping_call = self.factory.clock.callLater(interval, self._ping)

    def _ping(self) -> None:
        self._ping_call = None
        if not self._open:
            return
        self._ping_payload = os.urandom(8)
        self.sendPing(self._ping_payload)
        timeout = self.factory.env.config.ws_client_timeout
        if timeout > 0:
            self._pong_timer = self.factory.clock.callLater(timeout, self._pong_missing, timeout)
        else:
            self._schedule_ping()

    def onPong(self, payload: bytes) -> None:
        if self._ping_payload is None or payload != self._ping_payload:
            return
        self._ping_payload = None
        if self._pong_timer is not None and self._pong_timer.active():
            self._pong_timer.cancel()
        self._pong_timer = None
        self._schedule_ping()

    def _pong_missing(self, timeout: float) -> None:
        self._pong_timer = None
        log.info(
            "WebSocket for {account}: no pong within {timeout} s; dropping the connection",
            account=self.login.principal.name,
            timeout=timeout,
        )
        self.dropConnection(abort=True)

    def _stop_pings(self) -> None:
        for call in (self._ping_call, self._pong_timer):
            if call is not None and call.active():
                call.cancel()
        self._ping_call = self._pong_timer = None
        self._ping_payload = None

    # -- maxSizeRequest --

    # autobahn's maxMessagePayloadSize would fail the whole connection (close
    # code 1009) on a larger message, dropping every request in flight, and
    # it also refuses to send a larger message, so a Response bigger than
    # maxSizeRequest (which bounds requests only) could not go out.  Instead
    # a message is counted here as it arrives, its payload dropped once it
    # passes maxSizeRequest, and it is answered with the limit error of RFC
    # 8620 section 3.6.1, as the same request over HTTP would be; the
    # connection and its other requests go on.

    def onMessageBegin(self, isBinary: bool) -> None:
        super().onMessageBegin(isBinary)
        self._too_big = False

    def onMessageFrameBegin(self, length: int) -> None:
        super().onMessageFrameBegin(length)
        self._check_size()

    def onMessageFrameData(self, payload: bytes) -> None:
        # A compressed frame's inflated size is only known here.
        self._check_size()
        if not self._too_big:
            super().onMessageFrameData(payload)

    def onMessageEnd(self) -> None:
        if not self._too_big:
            super().onMessageEnd()
            return
        self._too_big = False
        self.message_data = []
        size = self.message_data_total_length
        maximum = self.factory.env.config.max_size_request
        log.info(
            "WebSocket for {account}: a message of {size} bytes is over maxSizeRequest ({maximum})",
            account=self.login.principal.name,
            size=size,
            maximum=maximum,
        )
        self._send_text(
            _request_error(limit("maxSizeRequest", f"the request is {size} bytes; the limit is {maximum}"), None)
        )

    def _check_size(self) -> None:
        if not self._too_big and self.message_data_total_length > self.factory.env.config.max_size_request:
            self._too_big = True
            self.message_data = []
            self.frame_data = []

    # -- messages --

    def _send_text(self, data: bytes) -> None:
        if self._open:
            self.sendMessage(data, isBinary=False)

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        if isBinary:
            # RFC 8887 section 4.3.1: a binary message SHOULD be logged; the
            # client still gets an answer, so it can tell what went wrong.
            log.warn(
                "WebSocket for {account}: a binary message of {size} bytes, answered with notJSON",
                account=self.login.principal.name,
                size=len(payload),
            )
            self._send_text(_request_error(not_json("JMAP messages are JSON text messages, not binary"), None))
            return
        try:
            message = orjson.loads(payload)
        except orjson.JSONDecodeError as e:
            self._send_text(_request_error(not_json(f"the message is not valid JSON: {e}"), None))
            return
        try:
            # Before anything is done with it: _request serialises the
            # message again, which fails past this depth.
            check_depth(message)
        except RequestError as e:
            self._send_text(_request_error(e, None))
            return
        if not isinstance(message, dict):
            self._send_text(_request_error(not_request("a message must be a JSON object with an '@type'"), None))
            return
        kind = message.get("@type")
        if kind == "Request":
            self._request(message)
        elif kind == "WebSocketPushEnable":
            self._push_enable(message)
        elif kind == "WebSocketPushDisable":
            self._push_off()
        else:
            request_id = message.get("id") if isinstance(message.get("id"), str) else None
            self._send_text(
                _request_error(
                    not_request(
                        "'@type' must be Request, WebSocketPushEnable or WebSocketPushDisable, got"
                        f" {kind!r}"
                    ),
                    request_id,
                )
            )

    def _request(self, message: dict[str, Any]) -> None:
        env = self.factory.env
        config = env.config
        request_id = message.pop("id", None)
        message.pop("@type")
        if request_id is not None and not isinstance(request_id, str):
            self._send_text(_request_error(not_request("'id' must be a String"), None))
            return
        if self._inflight >= config.max_concurrent_requests:
            error = limit(
                "maxConcurrentRequests",
                f"at most {config.max_concurrent_requests} requests may run at once on one connection",
            )
            self._send_text(_request_error(error, request_id))
            return
        try:
            jmap_request = parse_request(
                orjson.dumps(message), env.registry.capabilities, config.max_calls_in_request
            )
        except RequestError as e:
            self._send_text(_request_error(e, request_id))
            return
        extra: dict[str, Any] = {"@type": "Response"}
        if request_id is not None:
            extra["requestId"] = request_id
        self._inflight += 1
        d = self._run(jmap_request, extra, request_id, retry=True)
        d.addBoth(self._request_done)

    def _run(self, jmap_request: Request, extra: dict[str, Any], request_id: Any, retry: bool) -> Deferred[Any]:
        """
        Run the request; when the account's credentials changed since the
        connection's were verified, verify them again once (another token
        of the account revoked leaves them valid) and run it again.
        """
        d = run_request(self.factory.env, self.login, jmap_request, extra)
        d.addCallback(self._send_text)
        again = (lambda: self._run(jmap_request, extra, request_id, retry=False)) if retry else None
        d.addErrback(self._request_failed, request_id, again)
        return d

    async def _login_again(self) -> None:
        try:
            self.login = await self.relogin()
        except HTTPProblem:
            raise AuthVersionChanged(self.login.principal.name) from None

    def _request_done(self, result: Any) -> None:
        self._inflight -= 1

    def _request_failed(self, failure: Any, request_id: Any, again: Any = None) -> Any:
        if failure.check(AuthVersionChanged) and again is not None and self.relogin is not None:
            d = ensureDeferred(self._login_again())
            d.addCallback(lambda _: again())
            d.addErrback(self._request_failed, request_id)
            return d
        if failure.check(AuthVersionChanged):
            log.info("WebSocket for {account}: credentials changed; closing", account=self.login.principal.name)
            self._send_text(_request_error(RequestError("about:blank", 401, "the credentials changed"), request_id))
            self.close_with(CLOSE_POLICY, "the credentials changed; connect again")
            return
        from jmapd.storage.ids import new_id

        error_id = new_id("e", 10)
        log.failure("WebSocket request failed, error id {error_id}", failure, error_id=error_id)
        self._send_text(
            _request_error(
                RequestError("serverFail", 500, f"internal error {error_id}; see the server log"), request_id
            )
        )

    # -- push --

    @property
    def pushed_accounts(self) -> frozenset[str]:
        """
        The accounts whose changes are pushed now (none before push is
        enabled and its database hop done).
        """
        return frozenset() if self._follower is None else self._follower.accounts

    def _push_enable(self, message: dict[str, Any]) -> None:
        data_types = message.get("dataTypes")
        push_state = message.get("pushState")
        if data_types is not None and (
            not isinstance(data_types, list) or not all(isinstance(t, str) for t in data_types)
        ):
            self._send_text(_request_error(not_request("'dataTypes' must be null or an array of type names"), None))
            return
        if push_state is not None and not isinstance(push_state, str):
            self._send_text(_request_error(not_request("'pushState' must be a String"), None))
            return
        types = None if data_types is None else frozenset(data_types)
        if self._channel is not None:
            self._channel.set_types(types)
            if push_state is None:
                return
            self._push_off()
        d = ensureDeferred(self._start_push(types, decode_position(push_state)))
        d.addErrback(self._request_failed, None)

    async def _start_push(self, types: frozenset[str] | None, last: dict[str, int] | None) -> None:
        factory = self.factory
        env = factory.env
        channel = ThrottledChannel(factory.clock, env.config.event_source_throttle, self._send_state, types)
        follower = Follower(env, factory.notifier, self.login.principal, channel.add)
        self._channel = channel
        self._follower = follower
        # Hold every change before reading the states (see Follower.start).
        follower.hold()
        try:
            def checked(txn: Any, login: Any) -> tuple[tuple[str, ...], dict[str, int], dict[str, dict[str, int]]]:
                check_auth_version(txn, login)
                return snapshot(env, txn, login.principal, last)

            account_ids, position, missed = await env.database.run_interaction(checked, self.login)
        except BaseException:
            follower.close()
            raise
        if self._channel is not channel or not self._open:
            follower.close()
            return
        channel.position.update(position)
        for account_id, states in missed.items():
            channel.add(account_id, states)
        follower.start(account_ids, position)

    def _send_state(self, changed: dict[str, dict[str, int]]) -> None:
        """
        Push a StateChange once the connection's credentials are known to
        be still valid (one database read; verified again when the
        account's credentials changed): a revoked token or a changed
        password closes the socket instead, even for a client that only
        listens and never sends a request that would find out.
        """
        message = state_change(changed)
        if self._channel is not None:
            message["pushState"] = encode_position(self._channel.position)
        payload = orjson.dumps(message)

        def check(_: Any) -> Any:
            if not self._open:
                return None
            return ensureDeferred(self._still_valid()).addCallback(send)

        def send(valid: bool) -> None:
            if not self._open:
                return
            if valid:
                self._send_text(payload)
                return
            log.info("WebSocket for {account}: credentials changed; closing", account=self.login.principal.name)
            self.close_with(CLOSE_POLICY, "the credentials changed; connect again")

        def failed(failure: Any) -> None:
            log.failure("WebSocket push: cannot check the credentials; closing", failure)
            if self._open:
                self.close_with(CLOSE_POLICY, "the credentials cannot be checked; connect again")

        self._pushing.addCallback(check).addErrback(failed)

    async def _still_valid(self) -> bool:
        login = await still_valid(self.factory.env.database, self.login, self.relogin)
        if login is None:
            return False
        self.login = login
        return True

    def _push_off(self) -> None:
        channel, self._channel = self._channel, None
        follower, self._follower = self._follower, None
        if follower is not None:
            follower.close()
        if channel is not None:
            channel.close()


class JMAPWebSocketFactory(WebSocketServerFactory):
    """
    Builds L{JMAPWebSocketProtocol}s for upgrades that
    L{WebSocketUpgradeResource} authenticated.

    @ivar connections: the open connections.
    """

    protocol = JMAPWebSocketProtocol

    def __init__(self, env: Any, notifier: Any, clock: Any, reactor: Any) -> None:
        super().__init__(protocols=[SUBPROTOCOL], reactor=reactor)
        self.env = env
        self.notifier = notifier
        self.clock = clock
        self.connections: set[JMAPWebSocketProtocol] = set()
        self._next_login: Any = None
        # No autobahn size limits or auto-ping: the protocol applies
        # maxSizeRequest to what it receives only and runs its own pings
        # (see JMAPWebSocketProtocol).

    def buildProtocol(self, addr: Any) -> Any:
        protocol: Any = super().buildProtocol(addr)
        if self._next_login is not None:
            protocol.login, protocol.relogin = self._next_login
        self._next_login = None
        return protocol

    def upgrade(self, request: Any, login: Any, relogin: Any = None) -> None:
        """
        Hand the authenticated upgrade request to autobahn, which takes the
        connection over; the protocol it builds gets C{login} and
        C{relogin}, which verifies the request's credentials again.
        """
        self._next_login = (login, relogin)
        try:
            WebSocketResource(self).render(request)
        finally:
            self._next_login = None

    def close_all(self) -> Deferred[Any]:
        """
        Close every connection (at shutdown); fires when all are gone.
        """
        closing = [connection.closed for connection in self.connections]
        for connection in list(self.connections):
            connection.close_with(CLOSE_GOING_AWAY, "the server is shutting down")
        return DeferredList(closing)


class WebSocketUpgradeResource(Resource):
    """
    C{/jmap/ws}: check the upgrade request, authenticate it, then let
    autobahn take the connection.
    """

    isLeaf = True

    def __init__(self, env: Any, authenticator: Any, factory: JMAPWebSocketFactory) -> None:
        super().__init__()
        self._env = env
        self._auth = authenticator
        self._factory = factory
        config = env.config
        # Always strict, whatever strict-cors says: permissive CORS is safe
        # because a page on another origin can only send the credentials it
        # holds itself (no Access-Control-Allow-Credentials), but a browser's
        # WebSocket API cannot set an Authorization header at all, and the
        # browser adds the credentials it has cached for this server to the
        # upgrade of any page, which CORS does not guard: a page on any site
        # could read the user's mail (cross-site WebSocket hijacking).  The
        # security considerations of RFC 8887 (section 6) apply RFC 6455
        # section 10.2 to browser clients: check the Origin and answer 403 to
        # one not expected.  Clients outside a browser send no Origin.
        self._origins = CORSPolicy(True, config.cors_allowed_origins)

    def render(self, request: Any) -> Any:
        try:
            self._check(request)
        except HTTPProblem as problem:
            write_problem(request, problem)
            return NOT_DONE_YET
        d = ensureDeferred(self._auth.authenticate(request))
        d.addCallbacks(self._authenticated, self._refused, callbackArgs=(request,), errbackArgs=(request,))
        return NOT_DONE_YET

    def _check(self, request: Any) -> None:
        if any(request.postpath):
            raise HTTPProblem(404, "no such resource")
        upgrade = (request.getHeader(b"upgrade") or b"").lower()
        if request.method != b"GET" or upgrade != b"websocket":
            raise HTTPProblem(
                426, "this is the JMAP WebSocket endpoint: send a WebSocket upgrade", headers={b"upgrade": b"websocket"}
            )
        protocols = (request.getHeader(b"sec-websocket-protocol") or b"").decode("latin-1")
        if SUBPROTOCOL not in [p.strip() for p in protocols.split(",")]:
            raise HTTPProblem(400, "the 'jmap' WebSocket subprotocol is required (Sec-WebSocket-Protocol: jmap)")
        origin = request.getHeader(b"origin")
        if origin is not None and not self._origins.allows(origin):
            raise HTTPProblem(403, f"WebSocket connections from {origin.decode('latin-1')} are not allowed")

    def _authenticated(self, login: Any, request: Any) -> None:
        if request.finished or getattr(request, "_disconnected", False):
            return
        self._factory.upgrade(request, login, functools.partial(self._auth.login_again, self._auth.hold(request)))

    def _refused(self, failure: Any, request: Any) -> None:
        if failure.check(HTTPProblem):
            write_problem(request, failure.value)
            return
        log.failure("WebSocket upgrade failed", failure)
        write_problem(request, HTTPProblem(500, "internal error; see the server log"))
