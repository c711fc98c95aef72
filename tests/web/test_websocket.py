"""
End-to-end tests of JMAP over WebSocket (RFC 8887): the upgrade checks,
requests through the same engine as HTTP, request errors, and push.
"""

from __future__ import annotations

from typing import Any

import orjson
from twisted.internet import reactor
from twisted.internet.defer import ensureDeferred
from twisted.internet.task import deferLater
from twisted.logger import LogLevel, globalLogPublisher
from twisted.web.test.requesthelper import DummyRequest

from jmapd.protocol.engine import CORE
from jmapd.push import WEBSOCKET, websocket_url
from jmapd.push.notifier import decode_position
from jmapd.web.websocket import WebSocketUpgradeResource
from tests.push.support import PushTestCase, open_event_stream, open_websocket, push_on, settle
from tests.support import basic

ERROR = "urn:ietf:params:jmap:error:"

UPGRADE = {
    b"connection": [b"Upgrade"],
    b"upgrade": [b"websocket"],
    b"sec-websocket-version": [b"13"],
    b"sec-websocket-key": [b"dGhlIHNhbXBsZSBub25jZQ=="],
    b"sec-websocket-protocol": [b"jmap"],
}


def echo(request_id: str | None = "r1", value: Any = 1) -> dict[str, Any]:
    message: dict[str, Any] = {"@type": "Request", "using": [CORE], "methodCalls": [["Core/echo", {"v": value}, "c"]]}
    if request_id is not None:
        message["id"] = request_id
    return message


async def answers(case: Any, ws: Any, request_id: str) -> None:
    """
    Assert that the WebSocket C{ws} is still usable: a Core/echo Request
    sent on it is answered, with its id as the requestId.
    """
    ws.send(echo(request_id))
    case.assertEqual((await ws.next())["requestId"], request_id)


class UpgradeTests(PushTestCase):
    def test_session_capability(self) -> None:
        """
        The Session advertises urn:ietf:params:jmap:websocket with the ws
        URL under jmap-url and supportsPush true.
        """

        async def run() -> None:
            server = await self.start_push_server()
            response, body = await server.request("GET", "/.well-known/jmap")
            import orjson

            session = orjson.loads(body)
            self.assertEqual(
                session["capabilities"][WEBSOCKET],
                {"url": server.base.replace("http://", "ws://") + "/jmap/ws", "supportsPush": True},
            )

        return ensureDeferred(run())

    def test_url(self) -> None:
        """
        https servers advertise wss://, http servers ws://, below any path.
        """
        self.assertEqual(websocket_url("https://mail.example/base"), "wss://mail.example/base/jmap/ws")
        self.assertEqual(websocket_url("http://localhost:8080"), "ws://localhost:8080/jmap/ws")

    def test_unauthenticated_upgrade(self) -> None:
        """
        An upgrade without credentials is refused with 401 before any
        WebSocket exists.
        """

        async def run() -> None:
            await self.start_push_server()
            response, body = await self.server.request("GET", "/jmap/ws", headers=UPGRADE, auth=None)
            self.assertEqual(response.code, 401)
            self.assertEqual(self.hub.websocket.connections, set())

        return ensureDeferred(run())

    def test_wrong_password(self) -> None:
        """
        An upgrade with wrong credentials is refused with 401.
        """

        async def run() -> None:
            await self.start_push_server()
            headers = {**UPGRADE, b"authorization": [basic("alice", "wrong")]}
            response, body = await self.server.request("GET", "/jmap/ws", headers=headers, auth=None)
            self.assertEqual(response.code, 401)

        return ensureDeferred(run())

    def test_subprotocol_required(self) -> None:
        """
        An upgrade that does not offer the jmap subprotocol is refused (400).
        """

        async def run() -> None:
            await self.start_push_server()
            headers = {**UPGRADE, b"sec-websocket-protocol": [b"chat"]}
            response, body = await self.server.request("GET", "/jmap/ws", headers=headers)
            self.assertEqual(response.code, 400)
            self.assertIn(b"jmap", body)

        return ensureDeferred(run())

    def test_not_an_upgrade(self) -> None:
        """
        A plain GET is answered 426 Upgrade Required.
        """

        async def run() -> None:
            await self.start_push_server()
            response, body = await self.server.request("GET", "/jmap/ws")
            self.assertEqual(response.code, 426)
            # The client drops the hop-by-hop Upgrade header; check it on
            # the resource itself.
            request = DummyRequest([b""])
            WebSocketUpgradeResource(self.server.env, None, self.hub.websocket).render(request)
            self.assertEqual(request.responseCode, 426)
            self.assertEqual(request.responseHeaders.getRawHeaders(b"upgrade"), [b"websocket"])

        return ensureDeferred(run())

    def test_strict_origin(self) -> None:
        """
        Under strict-cors an upgrade from an origin that is not allowed is
        refused (403); an allowed origin connects.
        """

        async def run() -> None:
            await self.start_push_server(strict_cors=True, cors_allowed_origins=("https://app.example",))
            headers = {**UPGRADE, b"origin": [b"https://evil.example"]}
            response, body = await self.server.request("GET", "/jmap/ws", headers=headers)
            self.assertEqual(response.code, 403)
            ws = await open_websocket(self, origin="https://app.example")
            await answers(self, ws, "allowed")

        return ensureDeferred(run())

    def test_origin_checked_without_strict_cors(self) -> None:
        """
        Without strict-cors (CORS headers for any origin) an upgrade from an
        origin outside cors-allowed-origins is still refused (403): the
        browser sends its cached credentials with the upgrade of any page,
        which CORS does not guard.  An allowed origin, and a client outside
        a browser (no Origin), connect.
        """

        async def run() -> None:
            await self.start_push_server(strict_cors=False, cors_allowed_origins=("https://app.example",))
            headers = {**UPGRADE, b"origin": [b"https://evil.example"]}
            response, body = await self.server.request("GET", "/jmap/ws", headers=headers)
            self.assertEqual(response.code, 403)
            self.assertEqual(self.hub.websocket.connections, set())
            ws = await open_websocket(self, origin="https://app.example")
            await answers(self, ws, "allowed")
            ws = await open_websocket(self)
            await answers(self, ws, "no origin")

        return ensureDeferred(run())


class RequestTests(PushTestCase):
    def test_request_response(self) -> None:
        """
        A Request is answered by a Response with the same requestId, the
        method responses of the engine and the session state.
        """

        async def run() -> None:
            await self.start_push_server()
            ws = await open_websocket(self)
            ws.send(echo("first", {"a": 1}))
            response = await ws.next()
            self.assertEqual(response["@type"], "Response")
            self.assertEqual(response["requestId"], "first")
            self.assertEqual(response["methodResponses"], [["Core/echo", {"v": {"a": 1}}, "c"]])
            self.assertIsInstance(response["sessionState"], str)

        return ensureDeferred(run())

    def test_same_engine(self) -> None:
        """
        Method errors come back as in HTTP: an unknown method is an error
        invocation inside a Response.
        """

        async def run() -> None:
            await self.start_push_server()
            ws = await open_websocket(self)
            ws.send({"@type": "Request", "using": [CORE], "methodCalls": [["Nope/get", {}, "n"]]})
            response = await ws.next()
            self.assertNotIn("requestId", response)
            self.assertEqual(response["methodResponses"][0][0], "error")
            self.assertEqual(response["methodResponses"][0][1]["type"], "unknownMethod")

        return ensureDeferred(run())

    def test_request_error(self) -> None:
        """
        A request the engine refuses (unknown capability) is a RequestError
        with the problem fields and the requestId.
        """

        async def run() -> None:
            await self.start_push_server()
            ws = await open_websocket(self)
            ws.send({"@type": "Request", "id": "x", "using": ["urn:example:nope"], "methodCalls": []})
            error = await ws.next()
            self.assertEqual(error["@type"], "RequestError")
            self.assertEqual(error["requestId"], "x")
            self.assertEqual(error["type"], ERROR + "unknownCapability")
            self.assertEqual(error["status"], 400)

        return ensureDeferred(run())

    def test_bad_messages(self) -> None:
        """
        Invalid JSON and binary messages are RequestError notJSON, an
        unknown @type notRequest; the connection stays usable.  A binary
        message is logged as a warning (RFC 8887 section 4.3.1: SHOULD).
        """
        events: list[dict[str, Any]] = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)

        async def run() -> None:
            await self.start_push_server()
            ws = await open_websocket(self)
            ws.send_raw(b"{nope")
            self.assertEqual((await ws.next())["type"], ERROR + "notJSON")
            ws.send_raw(b"\x00\x01", binary=True)
            self.assertEqual((await ws.next())["type"], ERROR + "notJSON")
            warned = [e for e in events if e.get("log_level") == LogLevel.warn and "binary" in e.get("log_format", "")]
            self.assertEqual([e["size"] for e in warned], [2])
            ws.send({"@type": "Subscribe", "id": "s"})
            error = await ws.next()
            self.assertEqual((error["type"], error["requestId"]), (ERROR + "notRequest", "s"))
            await answers(self, ws, "ok")

        return ensureDeferred(run())

    def test_message_nested_too_deep(self) -> None:
        """
        A Request nested 300 levels deep (JSON orjson reads but cannot
        write back) is a RequestError notJSON, not an exception in the
        connection's handler; the connection stays usable.
        """

        async def run() -> None:
            await self.start_push_server()
            ws = await open_websocket(self)
            deep = b"[" * 300 + b"]" * 300
            ws.send_raw(
                b'{"@type":"Request","using":["urn:ietf:params:jmap:core"],'
                b'"methodCalls":[["Core/echo",{"a":' + deep + b'},"c0"]]}'
            )
            error = await ws.next()
            self.assertEqual((error["@type"], error["type"]), ("RequestError", ERROR + "notJSON"))
            await answers(self, ws, "ok")

        return ensureDeferred(run())

    def test_request_over_max_size(self) -> None:
        """
        A message larger than maxSizeRequest, in one frame or in fragments
        each below it, is answered with the RequestError limit naming
        maxSizeRequest (RFC 8620 section 3.6.1) and the connection stays
        open for the next request.
        """

        async def run() -> None:
            await self.start_push_server(max_size_request=3000)
            ws = await open_websocket(self)
            ws.send(echo("huge", "y" * 5000))
            error = await ws.next()
            self.assertEqual(
                (error["@type"], error["type"], error["limit"], error["status"]),
                ("RequestError", ERROR + "limit", "maxSizeRequest", 400),
            )
            ws.protocol.sendMessage(orjson.dumps(echo("parts", "z" * 5000)), isBinary=False, fragmentSize=1000)
            error = await ws.next()
            self.assertEqual((error["type"], error["limit"]), (ERROR + "limit", "maxSizeRequest"))
            await answers(self, ws, "small")

        return ensureDeferred(run())

    def test_response_over_max_size(self) -> None:
        """
        maxSizeRequest bounds requests only: a Response larger than it is
        sent whole.
        """

        async def run() -> None:
            await self.start_push_server(max_size_request=3000)
            ws = await open_websocket(self)
            value = "x" * 1500
            ws.send(
                {
                    "@type": "Request",
                    "id": "twice",
                    "using": [CORE],
                    "methodCalls": [
                        ["Core/echo", {"v": value}, "a"],
                        ["Core/echo", {"#v": {"resultOf": "a", "name": "Core/echo", "path": "/v"}}, "b"],
                    ],
                }
            )
            response = await ws.next()
            self.assertEqual((response["@type"], response["requestId"]), ("Response", "twice"))
            self.assertEqual([r[1]["v"] for r in response["methodResponses"]], [value, value])

        return ensureDeferred(run())

    def test_write_publishes(self) -> None:
        """
        A write made over the WebSocket is pushed like any other: an
        EventSource of the same user gets its StateChange.
        """

        async def run() -> None:
            await self.start_push_server()
            stream = await open_event_stream(self)
            await stream.next()
            ws = await open_websocket(self)
            ws.send({"@type": "Request", "id": "w", "using": [CORE], "methodCalls": [["Test/touch", {"types": ["Email"]}, "t"]]})
            states = (await ws.next())["methodResponses"][0][1]["states"]
            event = await stream.next()
            self.assertEqual(event["data"]["changed"], {self.account: states})

        return ensureDeferred(run())

    def test_credentials_changed(self) -> None:
        """
        When the account's password changes, the next request is refused
        and the connection closed, so the client must authenticate again.
        """

        async def run() -> None:
            await self.start_push_server()
            ws = await open_websocket(self)
            from jmapd.storage import accounts

            self.server.env.database.run_sync(accounts.set_password, "alice", None, write=True)
            ws.send(echo("late"))
            error = await ws.next()
            self.assertEqual((error["@type"], error["status"], error["requestId"]), ("RequestError", 401, "late"))
            await ws.when_lost()

        return ensureDeferred(run())


    def test_other_token_revoked(self) -> None:
        """
        Revoking another token of the account (which changes the account's
        auth version) does not disturb a connection whose own credentials
        stay valid: they are verified again and the request is answered.
        """

        async def run() -> None:
            await self.start_push_server()
            from jmapd.storage import accounts

            database = self.server.env.database
            token = database.run_sync(accounts.add_token, "alice", "phone", "s" * 32, write=True)
            ws = await open_websocket(self)
            database.run_sync(accounts.revoke_token, token.id, write=True)
            ws.send(echo("after"))
            response = await ws.next()
            self.assertEqual((response["@type"], response["requestId"]), ("Response", "after"))
            ws.send(echo("again"))
            response = await ws.next()
            self.assertEqual((response["@type"], response["requestId"]), ("Response", "again"))

        return ensureDeferred(run())


class PushTests(PushTestCase):
    async def pushing_websocket(self) -> Any:
        """
        A WebSocket that has sent WebSocketPushEnable for every type (and
        had a request answered after it, so push is on), with the push hub
        running.
        """
        ws = await open_websocket(self)
        ws.send({"@type": "WebSocketPushEnable", "dataTypes": None})
        ws.send(echo())
        await ws.next()
        await push_on(self.hub)
        return ws

    def test_push_enable(self) -> None:
        """
        After WebSocketPushEnable, a change is pushed as a StateChange with
        a pushState naming the new position.
        """

        async def run() -> None:
            await self.start_push_server()
            ws = await self.pushing_websocket()
            states = await self.touch("Mailbox")
            change = await ws.next()
            self.assertEqual(change["@type"], "StateChange")
            self.assertEqual(change["changed"], {self.account: states})
            self.assertEqual(decode_position(change["pushState"]), {self.account: int(states["Mailbox"])})

        return ensureDeferred(run())

    def test_password_changed_ends_push(self) -> None:
        """
        A connection that only listens to pushes is closed (1008) when the
        account's password changes, instead of being pushed the next
        change: it never sends a request that would find out.
        """

        async def run() -> None:
            await self.start_push_server()
            ws = await self.pushing_websocket()
            from jmapd.storage import accounts

            self.server.env.database.run_sync(accounts.set_password, "alice", None, write=True)
            # A change made by another process: only the states travel.
            self.server.env.publish_states({self.account: {"Mailbox": 99}})
            await ws.when_lost()
            self.assertEqual(ws.close_code, 1008)
            self.assertEqual(ws._factory.messages.pending, [])

        return ensureDeferred(run())

    def test_data_types(self) -> None:
        """
        dataTypes limits what is pushed.
        """

        async def run() -> None:
            await self.start_push_server()
            ws = await open_websocket(self)
            ws.send({"@type": "WebSocketPushEnable", "dataTypes": ["Email"]})
            ws.send(echo())
            await ws.next()
            await push_on(self.hub)
            await self.touch("Mailbox")
            states = await self.touch("Email")
            change = await ws.next()
            self.assertEqual(change["changed"], {self.account: {"Email": states["Email"]}})

        return ensureDeferred(run())

    def test_push_disable(self) -> None:
        """
        After WebSocketPushDisable nothing more is pushed.
        """

        async def run() -> None:
            await self.start_push_server()
            ws = await open_websocket(self)
            ws.send({"@type": "WebSocketPushEnable", "dataTypes": None})
            ws.send(echo("on"))
            await ws.next()
            await push_on(self.hub)
            ws.send({"@type": "WebSocketPushDisable"})
            ws.send(echo("off"))
            await ws.next()
            await self.touch("Mailbox")
            await answers(self, ws, "after")
            self.assertEqual(self.hub.notifier.listening(self.account), 0)

        return ensureDeferred(run())

    def test_push_state_replay(self) -> None:
        """
        WebSocketPushEnable with the pushState of an earlier connection
        pushes at once what changed since.
        """

        async def run() -> None:
            await self.start_push_server()
            ws = await self.pushing_websocket()
            await self.touch("Mailbox")
            push_state = (await ws.next())["pushState"]
            await ws.close()
            missed = await self.touch("Email")
            again = await open_websocket(self)
            again.send({"@type": "WebSocketPushEnable", "dataTypes": None, "pushState": push_state})
            change = await again.next()
            self.assertEqual(change["changed"], {self.account: missed})

        return ensureDeferred(run())

    def test_throttle(self) -> None:
        """
        Pushes on a WebSocket are throttled like EventSource events:
        changes inside the interval come as one StateChange at its end.
        """

        async def run() -> None:
            await self.start_push_server(event_source_throttle=5.0)
            ws = await self.pushing_websocket()
            await self.touch("Mailbox")
            await ws.next()
            await self.touch("Mailbox")
            latest = await self.touch("Email")
            await answers(self, ws, "between")
            self.clock.advance(5)
            change = await ws.next()
            self.assertEqual(change["changed"][self.account]["Email"], latest["Email"])

        return ensureDeferred(run())

    def test_close_cleans_up(self) -> None:
        """
        A closed connection stops listening and is forgotten.
        """

        async def run() -> None:
            await self.start_push_server()
            ws = await open_websocket(self)
            ws.send({"@type": "WebSocketPushEnable", "dataTypes": None})
            ws.send(echo())
            await ws.next()
            (connection,) = self.hub.websocket.connections
            # WebSocketPushEnable finishes after a database hop of its own.
            await settle(lambda: connection.pushed_accounts != frozenset())
            self.assertEqual(self.hub.notifier.listening(self.account), 1)
            await ws.close()
            await connection.closed
            self.assertEqual(self.hub.notifier.listening(self.account), 0)
            self.assertEqual(self.hub.websocket.connections, set())

        return ensureDeferred(run())

    def test_sub_second_ping_timeout(self) -> None:
        """
        A client that answers every ping stays connected even when
        ws-heartbeat-interval and ws-client-timeout are under a second (the
        pings and their timeouts run on the injected clock, to the
        millisecond).
        """

        async def run() -> None:
            await self.start_push_server(ws_heartbeat_interval=0.5, ws_client_timeout=0.5)
            ws = await open_websocket(self)
            pings: list[bytes] = []
            answer = ws.protocol.onPing
            ws.protocol.onPing = lambda payload: (pings.append(payload), answer(payload))
            (connection,) = self.hub.websocket.connections
            for count in range(1, 4):
                self.clock.advance(0.5)
                await settle(lambda count=count: len(pings) >= count)
                # Time for the pong to come back.
                await deferLater(reactor, 0.3, lambda: None)
            self.clock.advance(0.49)
            self.assertEqual(self.hub.websocket.connections, {connection})
            await answers(self, ws, "alive")

        return ensureDeferred(run())

    def test_unanswered_ping(self) -> None:
        """
        A client that does not answer a ping within ws-client-timeout is
        dropped, and not before.
        """

        async def run() -> None:
            await self.start_push_server(ws_heartbeat_interval=10, ws_client_timeout=5)
            ws = await open_websocket(self)
            pings: list[bytes] = []
            ws.protocol.onPing = pings.append
            self.clock.advance(10)
            await settle(lambda: len(pings) == 1)
            self.clock.advance(4.9)
            self.assertEqual(len(self.hub.websocket.connections), 1)
            self.clock.advance(0.1)
            await ws.when_lost()

        return ensureDeferred(run())

    def test_shutdown_closes(self) -> None:
        """
        Stopping the service closes the open WebSockets (going away).
        """

        async def run() -> None:
            await self.start_push_server()
            ws = await open_websocket(self)
            await self.server.service.stopService()
            await ws.when_lost()

        return ensureDeferred(run())
