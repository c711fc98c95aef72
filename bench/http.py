# -*- test-case-name: tests.bench.test_http -*-
"""
A small HTTP/1.1 client on raw asyncio protocols, for load generation.

The benchmarks measure servers, and on a 2-core machine every cycle the
client spends is a cycle the server does not get; so requests are built
once as bytes (L{build_request}) and a response is parsed with a few
C{bytes.find} calls: no header objects, no URL parsing per request.
Keep-alive is the normal case; L{Connection} also serves the
new-connection-per-request mode by being opened and closed each time.

Plain HTTP only: the benchmark targets listen on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
from typing import Any

from attrs import frozen

__all__ = ["Connection", "HTTPError", "Response", "build_request"]


class HTTPError(Exception):
    """
    The server broke the protocol or closed the connection early.
    """


@frozen
class Response:
    status: int
    headers: dict[bytes, bytes]
    body: bytes


def build_request(method: str, path: str, host: str, headers: dict[str, str], body: bytes = b"") -> bytes:
    """
    The bytes of one HTTP/1.1 request with a Content-Length body.
    """
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}"]
    lines.extend(f"{name}: {value}" for name, value in headers.items())
    if body or method in ("POST", "PUT"):
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


class _ResponseParser:
    """
    Incremental parser for one response at a time: C{feed} returns a
    L{Response} once one is complete, else C{None}.
    """

    def __init__(self) -> None:
        self.buffer = bytearray()
        self._head: tuple[int, dict[bytes, bytes]] | None = None
        self._length: int | None = None
        self._chunked = False
        self._until_close = False

    def feed(self, data: bytes) -> Response | None:
        self.buffer += data
        return self._parse()

    def _parse(self) -> Response | None:
        buffer = self.buffer
        if self._head is None:
            end = buffer.find(b"\r\n\r\n")
            if end < 0:
                return None
            lines = bytes(buffer[:end]).split(b"\r\n")
            del buffer[:end + 4]
            parts = lines[0].split(b" ", 2)
            if len(parts) < 2 or not parts[0].startswith(b"HTTP/1."):
                raise HTTPError(f"not an HTTP/1.x status line: {lines[0]!r}")
            headers = {}
            for line in lines[1:]:
                name, _, value = line.partition(b":")
                headers[name.strip().lower()] = value.strip()
            status = int(parts[1])
            self._head = (status, headers)
            if b"chunked" in headers.get(b"transfer-encoding", b"").lower():
                self._chunked = True
            elif b"content-length" in headers:
                self._length = int(headers[b"content-length"])
            elif status in (204, 304) or 100 <= status < 200:
                self._length = 0
            else:
                self._until_close = True
        if self._chunked:
            return self._parse_chunked()
        if self._until_close:
            return None
        assert self._length is not None
        if len(buffer) < self._length:
            return None
        body = bytes(buffer[:self._length])
        del buffer[:self._length]
        return self._done(body)

    def _parse_chunked(self) -> Response | None:
        buffer = self.buffer
        body = bytearray()
        position = 0
        while True:
            end = buffer.find(b"\r\n", position)
            if end < 0:
                return None
            size = int(bytes(buffer[position:end]).split(b";")[0], 16)
            if size == 0:
                # Trailers (none expected) end with an empty line.
                trailer_end = buffer.find(b"\r\n\r\n", end)
                if buffer[end:end + 4] == b"\r\n\r\n":
                    trailer_end = end
                if trailer_end < 0:
                    return None
                del buffer[:trailer_end + 4]
                return self._done(bytes(body))
            start = end + 2
            if len(buffer) < start + size + 2:
                return None
            body += buffer[start:start + size]
            position = start + size + 2

    def close(self) -> Response | None:
        """
        The connection closed: a body read until close is complete.
        """
        if self._head is not None and self._until_close:
            body = bytes(self.buffer)
            self.buffer.clear()
            return self._done(body)
        return None

    def _done(self, body: bytes) -> Response:
        assert self._head is not None
        status, headers = self._head
        self._head = None
        self._length = None
        self._chunked = False
        self._until_close = False
        return Response(status, headers, body)


class _Protocol(asyncio.Protocol):
    def __init__(self) -> None:
        self.transport: Any = None
        self.parser = _ResponseParser()
        self.waiter: asyncio.Future[Response] | None = None
        self.closed = False
        self.close_reason: BaseException | None = None

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        try:
            response = self.parser.feed(data)
        except (HTTPError, ValueError) as error:
            self._fail(HTTPError(str(error)))
            self.transport.close()
            return
        if response is not None:
            waiter, self.waiter = self.waiter, None
            if waiter is not None and not waiter.done():
                waiter.set_result(response)

    def connection_lost(self, exc: BaseException | None) -> None:
        self.closed = True
        response = self.parser.close()
        waiter, self.waiter = self.waiter, None
        if waiter is not None and not waiter.done():
            if response is not None:
                waiter.set_result(response)
            else:
                waiter.set_exception(HTTPError(f"connection closed before the response ({exc})"))

    def _fail(self, error: Exception) -> None:
        waiter, self.waiter = self.waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_exception(error)


class Connection:
    """
    One client connection; one request at a time.
    """

    def __init__(self, protocol: _Protocol) -> None:
        self._protocol = protocol

    @classmethod
    async def open(cls, host: str, port: int) -> Connection:
        loop = asyncio.get_running_loop()
        _, protocol = await loop.create_connection(_Protocol, host, port)
        return cls(protocol)

    @property
    def closed(self) -> bool:
        return self._protocol.closed

    async def request(self, raw: bytes) -> Response:
        """
        Send one request (bytes from L{build_request}) and wait for its
        response.
        """
        protocol = self._protocol
        if protocol.closed:
            raise HTTPError("connection is closed")
        waiter = asyncio.get_running_loop().create_future()
        protocol.waiter = waiter
        protocol.transport.write(raw)
        response = await waiter
        if response.headers.get(b"connection", b"").lower() == b"close":
            protocol.transport.close()
        return response

    def close(self) -> None:
        if not self._protocol.closed:
            self._protocol.transport.close()
