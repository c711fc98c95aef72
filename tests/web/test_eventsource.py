"""
End-to-end tests of the event-source resource (RFC 8620 section 7.3):
real HTTP to a real service, changes made through the API, and a
L{task.Clock} for the throttle and the pings.
"""

from __future__ import annotations

from twisted.internet.defer import ensureDeferred
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.test.requesthelper import DummyRequest

from jmapd.push.notifier import decode_position
from jmapd.storage import accounts
from jmapd.web.eventsource import PING_MAX, PING_MIN, format_event, parse_arguments
from jmapd.web.resource import HTTPProblem
from tests.push.support import PushTestCase, open_event_stream


def _request(query: dict[bytes, list[bytes]]) -> DummyRequest:
    request = DummyRequest([b""])
    request.args = query
    return request


class ArgumentTests(SynchronousTestCase):
    def test_defaults(self) -> None:
        """
        Without query arguments the stream pushes every type, stays open
        and sends no pings.
        """
        self.assertEqual(parse_arguments(_request({})), (None, False, 0))

    def test_types_list(self) -> None:
        """
        C{types} is a comma-separated list of type names.
        """
        types, closeafter, ping = parse_arguments(
            _request({b"types": [b"Email,Mailbox"], b"closeafter": [b"state"], b"ping": [b"60"]})
        )
        self.assertEqual((types, closeafter, ping), (frozenset({"Email", "Mailbox"}), True, 60))

    def test_ping_clamped(self) -> None:
        """
        A ping interval outside the server's range is clamped to it; the
        range respects RFC 8620 (minimum at most 30, maximum at least 300).
        """
        self.assertEqual(parse_arguments(_request({b"ping": [b"1"]}))[2], PING_MIN)
        self.assertEqual(parse_arguments(_request({b"ping": [b"99999"]}))[2], PING_MAX)
        self.assertLessEqual(PING_MIN, 30)
        self.assertGreaterEqual(PING_MAX, 300)

    def test_bad_arguments(self) -> None:
        """
        A bad C{closeafter}, C{ping} or C{types} is a 400 naming it.
        """
        for query, name in [
            ({b"closeafter": [b"never"]}, "closeafter"),
            ({b"ping": [b"-1"]}, "ping"),
            ({b"ping": [b"soon"]}, "ping"),
            ({b"types": [b"Email,,Mailbox"]}, "types"),
        ]:
            with self.assertRaises(HTTPProblem) as caught:
                parse_arguments(_request(query))
            self.assertEqual(caught.exception.status, 400)
            self.assertIn(name, caught.exception.detail)

    def test_format(self) -> None:
        """
        An event is event, one data line of JSON and an optional id,
        ended by a blank line; an id-only message has neither event nor
        data.
        """
        self.assertEqual(
            format_event("ping", {"interval": 5}), b'event: ping\ndata: {"interval":5}\n\n'
        )
        self.assertEqual(format_event("state", {}, "a:1"), b"event: state\ndata: {}\nid: a:1\n\n")
        self.assertEqual(format_event(None, None, "a:1"), b"id: a:1\n\n")


class EventSourceTests(PushTestCase):
    def test_unauthenticated(self) -> None:
        """
        The event source needs the same authentication as the API: 401
        with a challenge.
        """

        async def run() -> None:
            await self.start_push_server()
            response, body = await self.server.request("GET", "/jmap/eventsource/?types=*", auth=None)
            self.assertEqual(response.code, 401)
            self.assertTrue(response.headers.getRawHeaders(b"www-authenticate"))

        return ensureDeferred(run())

    def test_bad_argument(self) -> None:
        """
        A bad query argument is answered 400 before any stream starts.
        """

        async def run() -> None:
            await self.start_push_server()
            response, body = await self.server.request("GET", "/jmap/eventsource/?closeafter=maybe")
            self.assertEqual(response.code, 400)
            self.assertIn(b"closeafter", body)

        return ensureDeferred(run())

    def test_headers_and_first_id(self) -> None:
        """
        The response is text/event-stream that proxies must not buffer or
        cache, and it starts with an id-only message naming the account's
        current state.
        """

        async def run() -> None:
            await self.start_push_server()
            states = await self.touch("Mailbox")
            stream = await open_event_stream(self)
            self.assertEqual(stream.response.code, 200)
            self.assertEqual(stream.header(b"content-type"), b"text/event-stream")
            self.assertEqual(stream.header(b"cache-control"), b"no-cache")
            self.assertEqual(stream.header(b"x-accel-buffering"), b"no")
            first = await stream.next()
            self.assertEqual(first, {"id": f"{self.account}:{states['Mailbox']}"})

        return ensureDeferred(run())

    def test_state_event(self) -> None:
        """
        A committed API write becomes a state event with the StateChange of
        the changed types and their new states, followed by a new id.
        """

        async def run() -> None:
            await self.start_push_server()
            stream = await open_event_stream(self)
            await stream.next()
            states = await self.touch("Mailbox", "Email")
            event = await stream.next()
            self.assertEqual(event["event"], "state")
            self.assertEqual(
                event["data"], {"@type": "StateChange", "changed": {self.account: states}}
            )
            self.assertEqual(decode_position(event["id"]), {self.account: int(states["Email"])})

        return ensureDeferred(run())

    def test_email_delivery(self) -> None:
        """
        A delivery (the LMTP hook) pushes EmailDelivery along with Email.
        """

        async def run() -> None:
            await self.start_push_server()
            stream = await open_event_stream(self)
            await stream.next()
            response = await self.server.api([["Test/deliver", {}, "d"]])
            states = response["methodResponses"][0][1]["states"]
            event = await stream.next()
            self.assertEqual(event["data"]["changed"], {self.account: states})

        return ensureDeferred(run())

    def test_types(self) -> None:
        """
        With C{types}, only those types are pushed: a change of another
        type sends nothing, and a mixed change sends only the wanted part.
        """

        async def run() -> None:
            await self.start_push_server()
            stream = await open_event_stream(self, "types=Email&closeafter=no&ping=0")
            await stream.next()
            await self.touch("Mailbox")
            states = await self.touch("Email", "Thread")
            event = await stream.next()
            self.assertEqual(event["data"]["changed"], {self.account: {"Email": states["Email"]}})

        return ensureDeferred(run())

    def test_closeafter_state(self) -> None:
        """
        With closeafter=state the response ends after the first state event.
        """

        async def run() -> None:
            await self.start_push_server()
            stream = await open_event_stream(self, "types=*&closeafter=state&ping=0")
            await stream.next()
            await self.touch("Mailbox")
            event = await stream.next()
            self.assertEqual(event["event"], "state")
            await stream.when_finished()
            self.assertEqual(self.hub.eventsource.streams, set())

        return ensureDeferred(run())

    def test_throttle(self) -> None:
        """
        Changes within event-source-throttle of the last event are
        coalesced into one event sent when the interval ends, carrying the
        newest state of every changed type.
        """

        async def run() -> None:
            await self.start_push_server(event_source_throttle=10.0)
            stream = await open_event_stream(self)
            await stream.next()
            first = await self.touch("Mailbox")
            self.assertEqual((await stream.next())["data"]["changed"], {self.account: first})
            await self.touch("Mailbox")
            second = await self.touch("Mailbox", "Email")
            (server_stream,) = self.hub.eventsource.streams
            self.clock.advance(9.9)
            waiting = [c for c in self.clock.getDelayedCalls() if c.func == server_stream.channel.flush]
            self.assertEqual([c.getTime() for c in waiting], [10.0])
            self.clock.advance(0.1)
            event = await stream.next()
            self.assertEqual(event["data"]["changed"], {self.account: second})

        return ensureDeferred(run())

    def test_ping(self) -> None:
        """
        With ping=N a ping event carrying the interval comes when N seconds
        pass without an event; it sets no id.
        """

        async def run() -> None:
            await self.start_push_server()
            stream = await open_event_stream(self, "types=*&closeafter=no&ping=60")
            await stream.next()
            self.clock.advance(60)
            self.assertEqual(await stream.next(), {"event": "ping", "data": {"interval": 60}})

        return ensureDeferred(run())

    def test_ping_waits_after_event(self) -> None:
        """
        A state event restarts the ping interval: pings come only after N
        seconds of silence.
        """

        async def run() -> None:
            await self.start_push_server()
            stream = await open_event_stream(self, "types=*&closeafter=no&ping=60")
            await stream.next()
            self.clock.advance(50)
            await self.touch("Mailbox")
            self.assertEqual((await stream.next())["event"], "state")
            self.clock.advance(50)
            await self.touch("Email")
            self.assertEqual((await stream.next())["event"], "state")

        return ensureDeferred(run())

    def test_no_ping(self) -> None:
        """
        With ping=0 no ping is ever sent.
        """

        async def run() -> None:
            await self.start_push_server()
            stream = await open_event_stream(self, "types=*&closeafter=no&ping=0")
            await stream.next()
            self.clock.advance(PING_MAX * 10)
            await self.touch("Mailbox")
            self.assertEqual((await stream.next())["event"], "state")

        return ensureDeferred(run())

    def test_last_event_id(self) -> None:
        """
        A client reconnecting with Last-Event-ID is sent at once the types
        that changed since that id, with their current states.
        """

        async def run() -> None:
            await self.start_push_server()
            await self.touch("Mailbox")
            stream = await open_event_stream(self)
            last_id = (await stream.next())["id"]
            await stream.close()
            await self.touch("Mailbox")
            states = await self.touch("Email")
            again = await open_event_stream(self, headers={b"last-event-id": [last_id.encode()]})
            event = await again.next()
            self.assertEqual(event["event"], "state")
            self.assertEqual(event["data"]["changed"][self.account]["Email"], states["Email"])
            self.assertIn("Mailbox", event["data"]["changed"][self.account])
            self.assertEqual(decode_position(event["id"]), {self.account: int(states["Email"])})

        return ensureDeferred(run())

    def test_unknown_last_event_id(self) -> None:
        """
        A Last-Event-ID that is not ours replays nothing: the stream starts
        with the id-only message.
        """

        async def run() -> None:
            await self.start_push_server()
            states = await self.touch("Mailbox")
            stream = await open_event_stream(self, headers={b"last-event-id": [b"not an id"]})
            self.assertEqual(await stream.next(), {"id": f"{self.account}:{states['Mailbox']}"})

        return ensureDeferred(run())

    def test_cleanup_on_disconnect(self) -> None:
        """
        When the client goes away, the stream stops listening to the
        account and is forgotten.
        """

        async def run() -> None:
            await self.start_push_server()
            stream = await open_event_stream(self, "types=*&closeafter=no&ping=30")
            await stream.next()
            self.assertEqual(self.hub.notifier.listening(self.account), 1)
            (server_stream,) = self.hub.eventsource.streams
            await stream.close()
            await server_stream.closed
            self.assertEqual(self.hub.notifier.listening(self.account), 0)
            self.assertEqual(self.hub.eventsource.streams, set())
            timers = [c for c in self.clock.getDelayedCalls() if getattr(c.func, "__self__", None) is server_stream]
            self.assertEqual(timers, [])

        return ensureDeferred(run())

    def test_other_account(self) -> None:
        """
        A user's stream carries only the accounts that user may use.
        """

        async def run() -> None:
            await self.start_push_server()
            self.server.add_account("bob")
            stream = await open_event_stream(self)
            await stream.next()
            await self.touch("Mailbox", auth="bob")
            mine = await self.touch("Email")
            event = await stream.next()
            self.assertEqual(event["data"]["changed"], {self.account: mine})

        return ensureDeferred(run())

    def test_revoked_token_ends_stream(self) -> None:
        """
        A stream opened with a token that is then revoked (from any
        process: the database is all that changes) sends no more state
        events: it ends instead of the next one, although the client never
        authenticates again.
        """

        async def run() -> None:
            await self.start_push_server()
            database = self.server.env.database
            token = database.run_sync(accounts.add_token, "alice", "phone", "s" * 32, write=True)
            stream = await open_event_stream(
                self, headers={b"authorization": [b"Bearer " + b"s" * 32]}, auth=None
            )
            await stream.next()
            await self.touch("Mailbox")
            self.assertEqual((await stream.next())["event"], "state")
            database.run_sync(accounts.revoke_token, token.id, write=True)
            self.clock.advance(60)
            await self.touch("Email")
            self.clock.advance(60)
            await stream.when_finished()
            self.assertEqual(stream.events.pending, [])

        return ensureDeferred(run())

    def test_other_token_revoked_stream_goes_on(self) -> None:
        """
        A change of the account's credentials that leaves the stream's own
        valid (another token revoked) does not end it: its credentials are
        verified again and the state event is sent.
        """

        async def run() -> None:
            await self.start_push_server()
            database = self.server.env.database
            token = database.run_sync(accounts.add_token, "alice", "phone", "s" * 32, write=True)
            stream = await open_event_stream(self)
            await stream.next()
            database.run_sync(accounts.revoke_token, token.id, write=True)
            states = await self.touch("Mailbox")
            event = await stream.next()
            self.assertEqual(event["data"]["changed"], {self.account: states})

        return ensureDeferred(run())

    def test_shutdown_ends_streams(self) -> None:
        """
        Stopping the service ends the open streams.
        """

        async def run() -> None:
            await self.start_push_server()
            stream = await open_event_stream(self)
            await stream.next()
            await self.server.service.stopService()
            await stream.when_finished()

        return ensureDeferred(run())
