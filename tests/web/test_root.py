"""
Tests for L{jmapd.web.root}: the request class that refuses to store
oversized bodies.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase
from twisted.web.resource import Resource
from twisted.web.test.requesthelper import DummyChannel

from jmapd.web.resource import body_size
from jmapd.web.root import JMAPRequest, JMAPSite


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
