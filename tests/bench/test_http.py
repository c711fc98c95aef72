"""
Tests for L{bench.http}: the load client builds requests as bytes and
parses responses however the server frames and splits them.
"""

from __future__ import annotations

from twisted.trial.unittest import TestCase

from bench.http import HTTPError, _ResponseParser, build_request


class BuildRequestTests(TestCase):
    def test_post(self) -> None:
        """
        A POST carries Host, the given headers and a Content-Length.
        """
        raw = build_request("POST", "/jmap/", "127.0.0.1:80", {"Authorization": "Basic x"}, b"{}")
        self.assertEqual(raw, b"POST /jmap/ HTTP/1.1\r\nHost: 127.0.0.1:80\r\nAuthorization: Basic x\r\n"
                              b"Content-Length: 2\r\n\r\n{}")

    def test_get(self) -> None:
        """
        A GET has no Content-Length.
        """
        self.assertNotIn(b"Content-Length", build_request("GET", "/", "h", {}))


class ParserTests(TestCase):
    def feed_bytewise(self, data: bytes) -> list:
        parser = _ResponseParser()
        out = []
        for i in range(len(data)):
            response = parser.feed(data[i:i + 1])
            if response is not None:
                out.append(response)
        return out

    def test_content_length_split_anywhere(self) -> None:
        """
        A Content-Length response arriving a byte at a time is parsed
        once, and two pipelined responses are two responses.
        """
        one = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Type: application/json\r\n\r\nhello"
        responses = self.feed_bytewise(one + one.replace(b"200 OK", b"201 Created"))
        self.assertEqual([(r.status, r.body) for r in responses], [(200, b"hello"), (201, b"hello")])
        self.assertEqual(responses[0].headers[b"content-type"], b"application/json")

    def test_chunked(self) -> None:
        """
        A chunked body is joined from its chunks.
        """
        data = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2;x=y\r\nde\r\n0\r\n\r\n"
        (response,) = self.feed_bytewise(data)
        self.assertEqual(response.body, b"abcde")

    def test_until_close(self) -> None:
        """
        A body without length ends when the connection closes.
        """
        parser = _ResponseParser()
        self.assertIsNone(parser.feed(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nall of it"))
        self.assertEqual(parser.close().body, b"all of it")

    def test_no_body(self) -> None:
        """
        A 204 has no body.
        """
        self.assertEqual(_ResponseParser().feed(b"HTTP/1.1 204 No Content\r\n\r\n").body, b"")

    def test_garbage(self) -> None:
        """
        Something that is not HTTP is an error.
        """
        self.assertRaises(HTTPError, _ResponseParser().feed, b"SSH-2.0-OpenSSH\r\n\r\n")
