"""
Tests for L{jmapd.web.root}: the request class that refuses to store
oversized bodies, and the deadline for receiving a request.
"""

from __future__ import annotations

from typing import Any

import orjson
from autobahn.twisted.resource import WebSocketResource
from autobahn.twisted.websocket import WebSocketServerFactory, WebSocketServerProtocol
from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET
from twisted.web.test.requesthelper import DummyChannel

from jmapd.web.resource import body_size
from jmapd.web.root import BODY_PROGRESS, JMAPRequest, JMAPSite


def make_request(max_body: int) -> JMAPRequest:
    class Limited(JMAPRequest):
        pass

    Limited.max_body = max_body
    return Limited(DummyChannel())


class BodyLimitTests(SynchronousTestCase):
    def test_within_limit_kept(self) -> None:
        """
        A body within the limit is stored as usual and body_size reports
        its length.
        """
        request = make_request(10)
        request.gotLength(5)
        request.handleContentChunk(b"12345")
        self.assertIsNone(request.dropped_body_size)
        self.assertEqual(body_size(request), 5)
        self.assertEqual(request.content.read(), b"12345")

    def test_declared_length_over_limit_dropped(self) -> None:
        """
        A Content-Length above the limit makes the request drop every
        octet of the body (nothing reaches memory or a temporary file),
        while body_size still reports the declared size for the error.
        """
        request = make_request(10)
        request.gotLength(1000)
        request.handleContentChunk(b"x" * 600)
        request.handleContentChunk(b"x" * 400)
        self.assertEqual(request.content.getvalue(), b"")
        self.assertEqual(body_size(request), 1000)

    def test_chunked_body_over_limit_dropped(self) -> None:
        """
        A chunked body (no Content-Length) is counted: once it passes the
        limit, what was kept is discarded and the rest is dropped.
        """
        request = make_request(10)
        request.gotLength(None)
        request.handleContentChunk(b"x" * 8)
        request.handleContentChunk(b"x" * 8)
        request.handleContentChunk(b"x" * 8)
        request.content.seek(0)
        self.assertEqual(request.content.read(), b"")
        self.assertEqual(body_size(request), 24)


class FormParsingTests(SynchronousTestCase):
    def test_form_body_not_parsed(self) -> None:
        """
        A POST whose Content-Type says form data is not parsed into
        C{args} (JMAP has no forms, and parsing every POST's Content-Type
        costs time on the reactor thread): the body stays intact for the
        resource, and C{args} holds only the query string.
        """
        channel = DummyChannel()
        channel.site = JMAPSite(Resource(), max_body=100)
        request = channel.site.requestFactory(channel)
        processed = []
        request.process = lambda: processed.append(True)  # type: ignore[method-assign]
        request.requestHeaders.setRawHeaders(b"content-type", [b"application/x-www-form-urlencoded"])
        request.gotLength(7)
        request.handleContentChunk(b"a=1&b=2")
        request.requestReceived(b"POST", b"/jmap/?x=1", b"HTTP/1.1")
        self.assertEqual(processed, [True])
        self.assertEqual(request.args, {b"x": [b"1"]})
        self.assertEqual(request.content.read(), b"a=1&b=2")


TIMEOUT = 10.0


class _Echo(Resource):
    """
    Answers C{got <body>} at once.
    """

    isLeaf = True

    def render(self, request: Any) -> bytes:
        return b"got " + request.content.read()


class _Stream(Resource):
    """
    A long-lived response, as EventSource's: the header and one event now,
    more later, never finished.
    """

    isLeaf = True

    def render(self, request: Any) -> Any:
        request.setHeader(b"content-type", b"text/event-stream")
        request.write(b"event: state\ndata: {}\n\n")
        return NOT_DONE_YET


def _root() -> Resource:
    root = Resource()
    root.putChild(b"echo", _Echo())
    root.putChild(b"stream", _Stream())
    factory = WebSocketServerFactory(reactor=Clock())
    factory.protocol = WebSocketServerProtocol
    factory.setProtocolOptions(openHandshakeTimeout=0, closeHandshakeTimeout=0, autoPingInterval=0)
    root.putChild(b"ws", WebSocketResource(factory))
    return root


class RequestDeadlineTests(SynchronousTestCase):
    """
    A client has http-request-timeout seconds for a request's header, from
    its first byte, and as long again for its body; slower, it gets 408 and
    the connection is closed.  Time is a L{Clock} given to the site.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        site = JMAPSite(_root(), max_body=1000, request_timeout=TIMEOUT, reactor=self.clock)
        self.protocol = site.buildProtocol(IPv4Address("TCP", "192.0.2.7", 40000))
        self.transport = StringTransport(peerAddress=IPv4Address("TCP", "192.0.2.7", 40000))
        # autobahn's WebSocketResource hands the transport over through it.
        self.transport.protocol = self.protocol  # type: ignore[attr-defined]
        self.protocol.makeConnection(self.transport)

    def send_slowly(self, data: bytes, interval: float) -> float | None:
        """
        Send C{data} one byte every C{interval} seconds, as slowloris
        does (each byte restarts Twisted's idle timeout), until the server
        closes the connection; when it did, or None.
        """
        for index in range(len(data)):
            if self.transport.disconnecting:
                break
            self.protocol.dataReceived(data[index:index + 1])
            self.clock.advance(interval)
        return self.clock.seconds() if self.transport.disconnecting else None

    def assert_timed_out(self) -> None:
        response = self.transport.value()
        head, _, body = response.partition(b"\r\n\r\n")
        self.assertTrue(head.startswith(b"HTTP/1.1 408 Request Timeout\r\n"), response)
        self.assertIn(b"Connection: close", head)
        self.assertEqual(orjson.loads(body)["status"], 408)
        self.assertTrue(self.transport.disconnecting)

    def test_slow_header(self) -> None:
        """
        A request whose header arrives a byte a second (each byte well
        within the 60-second idle timeout, which it restarts) gets 408 and
        is disconnected http-request-timeout seconds after its first byte.
        """
        closed_at = self.send_slowly(b"GET /echo HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"1" * 100, 1)
        self.assertEqual(closed_at, TIMEOUT)
        self.assert_timed_out()

    def test_header_deadline_exact(self) -> None:
        """
        The header's deadline is counted from the request's first byte:
        it fires exactly http-request-timeout seconds later, although
        bytes kept arriving.
        """
        self.protocol.dataReceived(b"G")
        for _ in range(9):
            self.clock.advance(1)
            self.protocol.dataReceived(b"E")
        self.assertFalse(self.transport.disconnecting)
        self.clock.advance(0.999)
        self.assertFalse(self.transport.disconnecting)
        self.clock.advance(0.001)
        self.assert_timed_out()

    def test_slow_body(self) -> None:
        """
        A request whose header came in time but whose body trickles in
        gets 408 and is disconnected http-request-timeout seconds after
        its header was complete; the resource never sees it.
        """
        self.clock.advance(5)
        self.protocol.dataReceived(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n")
        closed_at = self.send_slowly(b"x" * 100, 1)
        self.assertEqual(closed_at, 5 + TIMEOUT)
        self.assert_timed_out()
        # The rest, arriving while the connection closes, is ignored.
        self.protocol.dataReceived(b"x" * 90)
        self.assertNotIn(b"got", self.transport.value())

    def test_large_body_coming_steadily(self) -> None:
        """
        A large body that keeps coming (64 KiB within each deadline) is
        received in full although it takes several times the deadline:
        an upload over a slow link is not cut off, only a body trickling
        in slower than that.
        """
        site = JMAPSite(_root(), max_body=1 << 20, request_timeout=TIMEOUT, reactor=self.clock)
        protocol = site.buildProtocol(IPv4Address("TCP", "192.0.2.7", 40000))
        transport = StringTransport(peerAddress=IPv4Address("TCP", "192.0.2.7", 40000))
        protocol.makeConnection(transport)
        piece = b"y" * BODY_PROGRESS
        protocol.dataReceived(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % (4 * len(piece)))
        for _ in range(4):
            self.clock.advance(TIMEOUT * 0.9)
            protocol.dataReceived(piece)
        self.assertIn(b"HTTP/1.1 200 OK", transport.value())
        self.assertNotIn(b"408", transport.value())
        self.assertTrue(transport.value().endswith(b"got " + piece * 4))

    def test_slow_chunked_body(self) -> None:
        """
        A chunked body has the same deadline.
        """
        self.protocol.dataReceived(b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
        closed_at = self.send_slowly(b"5\r\nabcde\r\n" * 10, 0.5)
        self.assertEqual(closed_at, TIMEOUT)
        self.assert_timed_out()

    def test_normal_requests_and_idle_keep_alive(self) -> None:
        """
        Requests that arrive in time are answered, even slow ones within
        the deadline; a keep-alive connection then idle between requests
        for longer than the deadline stays open, and is closed by Twisted's
        idle timeout as before.
        """
        self.send_slowly(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\n", 0.1)
        self.send_slowly(b"abc", TIMEOUT / 4)
        self.assertIn(b"HTTP/1.1 200 OK", self.transport.value())
        self.assertTrue(self.transport.value().endswith(b"got abc"))
        self.transport.clear()
        self.clock.advance(TIMEOUT * 5)
        self.assertFalse(self.transport.disconnecting)
        self.assertEqual(self.transport.value(), b"")
        self.protocol.dataReceived(b"GET /echo HTTP/1.1\r\nHost: x\r\n\r\n")
        self.assertIn(b"HTTP/1.1 200 OK", self.transport.value())
        self.transport.clear()
        self.clock.advance(59)
        self.assertFalse(self.transport.disconnecting)
        self.clock.advance(1)
        self.assertTrue(self.transport.disconnecting)
        self.assertEqual(self.transport.value(), b"")

    def test_pipelined_requests(self) -> None:
        """
        Pipelined requests that arrived together are all answered, and no
        deadline is left behind.
        """
        self.protocol.dataReceived(b"GET /echo HTTP/1.1\r\nHost: x\r\n\r\n" * 3)
        self.assertEqual(self.transport.value().count(b"HTTP/1.1 200 OK"), 3)
        self.assertEqual([call for call in self.clock.getDelayedCalls() if call.getTime() < 60], [])

    def test_long_response_not_cut(self) -> None:
        """
        A long-lived response (as an EventSource stream) open far longer
        than the deadline is not closed by it, and bytes the client sends
        meanwhile start no deadline.
        """
        self.protocol.dataReceived(b"GET /stream HTTP/1.1\r\nHost: x\r\n\r\n")
        self.assertIn(b"event: state", self.transport.value())
        self.clock.advance(TIMEOUT * 100)
        self.protocol.dataReceived(b"GET /echo HTTP/1.1\r\n")
        self.clock.advance(TIMEOUT * 100)
        self.assertFalse(self.transport.disconnecting)
        self.assertNotIn(b"408", self.transport.value())

    def test_websocket_not_cut(self) -> None:
        """
        A WebSocket open far longer than the deadline is not closed by it:
        once upgraded, the connection belongs to the WebSocket protocol.
        """
        self.protocol.dataReceived(
            b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        self.assertTrue(self.transport.value().startswith(b"HTTP/1.1 101 "), self.transport.value())
        self.clock.advance(TIMEOUT * 100)
        self.assertFalse(self.transport.disconnecting)
        self.assertNotIn(b"408", self.transport.value())


class LongLineTests(SynchronousTestCase):
    """
    A request line or header field longer than twisted.web reads gets an
    answer before the connection closes, not just the close.
    """

    def answer(self, data: bytes) -> tuple[bytes, dict[str, Any]]:
        site = JMAPSite(_root(), max_body=1000, reactor=Clock())
        protocol = site.buildProtocol(IPv4Address("TCP", "192.0.2.7", 40000))
        transport = StringTransport(peerAddress=IPv4Address("TCP", "192.0.2.7", 40000))
        protocol.makeConnection(transport)
        protocol.dataReceived(data)
        self.assertTrue(transport.disconnecting)
        head, _, body = transport.value().partition(b"\r\n\r\n")
        return head, orjson.loads(body)

    def test_request_line_too_long(self) -> None:
        """
        A request line over 16 KiB (a very long URL) is answered 414 URI
        Too Long (RFC 9112 section 3) with a problem document, then closed.
        """
        head, problem = self.answer(b"GET /" + b"a" * 60000 + b" HTTP/1.1\r\nHost: x\r\n\r\n")
        self.assertTrue(head.startswith(b"HTTP/1.1 414 URI Too Long\r\n"), head)
        self.assertEqual(problem["status"], 414)

    def test_header_field_too_long(self) -> None:
        """
        A header field over 16 KiB is answered 431 Request Header Fields
        Too Large (RFC 6585 section 5), then closed.
        """
        head, problem = self.answer(b"GET /echo HTTP/1.1\r\nHost: x\r\nX-Long: " + b"b" * 17000 + b"\r\n\r\n")
        self.assertTrue(head.startswith(b"HTTP/1.1 431 Request Header Fields Too Large\r\n"), head)
        self.assertEqual(problem["status"], 431)
