"""
Helpers for the push tests: a real jmapd service with push installed (the
way docs/push.md tells service.py to wire it), methods that make changes,
an EventSource client, a WebSocket client and an HTTP receiver for
PushSubscription deliveries.
"""

from __future__ import annotations

from typing import Any

import orjson
import treq
from autobahn.twisted.websocket import WebSocketClientFactory, WebSocketClientProtocol
from twisted.internet import reactor
from twisted.internet.defer import Deferred, DeferredQueue
from twisted.internet.protocol import Protocol
from twisted.internet.task import Clock
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Site

from jmapd import push
from jmapd.protocol.engine import CORE
from jmapd.push.hub import hub_for
from jmapd.push.notifier import record_delivery
from jmapd.service import build_registry
from jmapd.storage import changelog
from jmapd.storage.ids import new_id
from tests.support import ServerTestCase, basic


def registry_with_push() -> Any:
    """
    The server's registry, push registered, plus methods that change data
    of any type (Mail data lands in other issues).
    """
    registry = build_registry()
    push.register(registry)

    @registry.method("Test/touch", CORE, write=True)
    def touch(ctx: Any, arguments: dict[str, Any]) -> dict[str, Any]:
        """
        Create one object of each type in C{types}; return their states.
        """
        account_id = arguments.get("accountId", ctx.principal.account_id)
        states = {}
        for type_name in arguments["types"]:
            modseq = changelog.record_change(ctx.txn, account_id, type_name, new_id("x"), changelog.CREATED)
            states[type_name] = str(modseq)
        return {"states": states}

    @registry.method("Test/deliver", CORE, write=True)
    def deliver(ctx: Any, arguments: dict[str, Any]) -> dict[str, Any]:
        """
        What LMTP delivery will do: an Email created, then the delivery hook.
        """
        account_id = ctx.principal.account_id
        email = changelog.record_change(ctx.txn, account_id, "Email", new_id("x"), changelog.CREATED)
        delivery = record_delivery(ctx.txn, account_id)
        return {"states": {"Email": str(email), "EmailDelivery": str(delivery)}}

    return registry


class PushTestCase(ServerTestCase):
    """
    Start a service with push wired in; C{self.clock} drives throttling,
    pings and retries while the network runs on the real reactor.
    """

    async def start_push_server(self, **config: Any) -> Any:
        self.clock = Clock()
        config.setdefault("push_allow_insecure", True)
        server = await self.start_server(registry=registry_with_push(), clock=self.clock, **config)
        self.hub = hub_for(server.env)
        self.server = server
        self.account = server.add_account("alice")
        return server

    async def touch(self, *types: str, auth: str = "alice") -> dict[str, str]:
        """
        Change one object of each type through the API; the new states.
        """
        response = await self.server.api([["Test/touch", {"types": list(types)}, "t"]], auth=auth)
        return response["methodResponses"][0][1]["states"]  # type: ignore[no-any-return]


def _observe(d: Deferred[Any]) -> Deferred[None]:
    observer: Deferred[None] = Deferred()

    def fire(result: Any) -> Any:
        observer.callback(None)
        return result

    d.addBoth(fire)
    return observer


# -- EventSource -----------------------------------------------------------


class _EventReader(Protocol):
    def __init__(self, events: DeferredQueue[Any], finished: Deferred[None]) -> None:
        self._buffer = b""
        self._events = events
        self._finished = finished

    def dataReceived(self, data: bytes) -> None:
        self._buffer += data
        while b"\n\n" in self._buffer:
            block, self._buffer = self._buffer.split(b"\n\n", 1)
            event: dict[str, Any] = {}
            for line in block.decode().split("\n"):
                name, _, value = line.partition(": ")
                event[name] = orjson.loads(value) if name == "data" else value
            self._events.put(event)

    def connectionLost(self, reason: Any) -> None:
        self._finished.callback(None)


class EventStream:
    """
    An EventSource connection: its response, and its messages one by one
    (C{{"event": ..., "data": ..., "id": ...}}, as sent).
    """

    def __init__(self, response: Any) -> None:
        self.response = response
        self.events: DeferredQueue[Any] = DeferredQueue()
        self.finished: Deferred[None] = Deferred()
        self._reader = _EventReader(self.events, self.finished)
        response.deliverBody(self._reader)

    def next(self) -> Deferred[Any]:
        return self.events.get()

    def when_finished(self) -> Deferred[None]:
        return _observe(self.finished)

    def header(self, name: bytes) -> bytes:
        return b",".join(self.response.headers.getRawHeaders(name, []))

    async def close(self) -> None:
        """
        Go away as a client does, and wait until the connection is gone.
        """
        if not self.finished.called:
            self._reader.transport.stopProducing()
        await self.when_finished()


async def open_event_stream(
    test: PushTestCase, query: str = "types=*&closeafter=no&ping=0", headers: dict[bytes, list[bytes]] | None = None,
    auth: str | None = "alice",
) -> EventStream:
    all_headers: dict[bytes, list[bytes]] = dict(headers or {})
    if auth is not None:
        all_headers[b"authorization"] = [basic(auth)]
    response = await treq.get(
        f"{test.server.base}/jmap/eventsource/?{query}", headers=all_headers, reactor=reactor, persistent=False
    )
    stream = EventStream(response)
    test.addCleanup(stream.close)
    return stream


# -- WebSocket -------------------------------------------------------------


class _ClientProtocol(WebSocketClientProtocol):
    def onOpen(self) -> None:
        self.factory.opened.callback(self)

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        self.factory.messages.put(orjson.loads(payload))

    def onClose(self, wasClean: bool, code: Any, reason: Any) -> None:
        self.factory.close_code = code
        if not self.factory.opened.called:
            self.factory.opened.errback(ConnectionError(reason))

    def connectionLost(self, reason: Any) -> None:
        super().connectionLost(reason)
        if not self.factory.lost.called:
            self.factory.lost.callback(None)


class WebSocketClient:
    """
    A JMAP WebSocket client: send objects, receive them one by one.
    """

    def __init__(self, factory: Any, protocol: Any) -> None:
        self._factory = factory
        self.protocol = protocol

    def send(self, message: dict[str, Any]) -> None:
        self.protocol.sendMessage(orjson.dumps(message), isBinary=False)

    def send_raw(self, payload: bytes, binary: bool = False) -> None:
        self.protocol.sendMessage(payload, isBinary=binary)

    def next(self) -> Deferred[Any]:
        return self._factory.messages.get()

    def when_lost(self) -> Deferred[None]:
        """
        A new Deferred firing once the connection is gone (so that several
        waiters do not share one).
        """
        return _observe(self._factory.lost)

    @property
    def close_code(self) -> Any:
        return self._factory.close_code

    async def close(self) -> None:
        if not self._factory.lost.called:
            self.protocol.sendClose(1000)
        await self.when_lost()


async def open_websocket(test: PushTestCase, auth: str = "alice", origin: str | None = None) -> WebSocketClient:
    server = test.server
    port = server.service.port.getHost().port
    factory = WebSocketClientFactory(
        f"ws://127.0.0.1:{port}/jmap/ws", protocols=["jmap"], headers={"Authorization": basic(auth).decode()},
        reactor=reactor, origin=origin,
    )
    factory.protocol = _ClientProtocol
    factory.messages = DeferredQueue()
    factory.opened = Deferred()
    factory.lost = Deferred()
    factory.close_code = None
    reactor.connectTCP("127.0.0.1", port, factory)
    protocol = await factory.opened
    client = WebSocketClient(factory, protocol)
    test.addCleanup(client.close)
    return client


# -- a push receiver ---------------------------------------------------------


class Receiver(Resource):
    """
    An HTTP endpoint standing in for a push service: each POST is queued as
    C{(request headers, body)} and answered with the next of C{codes}
    (200 once they run out); C{None} in C{codes} never answers.
    """

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.posts: DeferredQueue[Any] = DeferredQueue()
        self.codes: list[int | None] = []
        self.held: list[Any] = []

    def render_POST(self, request: Any) -> Any:
        body = request.content.read()
        code = self.codes.pop(0) if self.codes else 200
        self.posts.put((request.requestHeaders, body))
        if code is None:
            self.held.append(request)
            return NOT_DONE_YET
        request.setResponseCode(code)
        if code == 429:
            request.setHeader(b"retry-after", b"30")
        return b""

    async def next_json(self) -> Any:
        headers, body = await self.posts.get()
        return orjson.loads(body)


def start_receiver(test: ServerTestCase) -> tuple[Receiver, str]:
    """
    A L{Receiver} listening on 127.0.0.1; its URL.
    """
    receiver = Receiver()
    site = Site(receiver)
    site.log = lambda request: None  # type: ignore[method-assign]
    port = reactor.listenTCP(0, site, interface="127.0.0.1")
    test.addCleanup(port.stopListening)
    return receiver, f"http://127.0.0.1:{port.getHost().port}/push"


async def settle(condition: Any, attempts: int = 500) -> None:
    """
    Let the reactor run until C{condition()} holds (work in flight in the
    worker pool finishing); fail if it never does.
    """
    from twisted.internet.task import deferLater

    for _ in range(attempts):
        if condition():
            return
        await deferLater(reactor, 0.01, lambda: None)
    raise AssertionError("the condition never held")


async def push_on(hub: Any) -> None:
    """
    Wait until every open WebSocket of C{hub} that asked for push has it
    on (its WebSocketPushEnable read the states in a database hop of its
    own, which a later request on the connection may overtake).
    """
    await settle(lambda: all(c.pushed_accounts for c in hub.websocket.connections))
