# -*- test-case-name: tests.web.test_cors -*-
"""
End-to-end tests of cross-origin resource sharing: what a browser on
another origin sees of jmapd's responses, and the preflight requests it
sends first.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import ensureDeferred

from tests.support import ServerTestCase
from tests.web.test_api import assert_problem

ORIGIN = b"https://client.example"


def header(response: Any, name: bytes) -> bytes | None:
    values = response.headers.getRawHeaders(name)
    return None if values is None else b", ".join(values)


def names(value: bytes | None) -> set[bytes]:
    """
    The lower-cased items of a comma-separated header.
    """
    return {item.strip().lower() for item in (value or b"").split(b",") if item.strip()}


def preflight_headers(origin: bytes, method: bytes = b"POST") -> dict[bytes, list[bytes]]:
    return {
        b"origin": [origin],
        b"access-control-request-method": [method],
        b"access-control-request-headers": [b"authorization, content-type"],
    }


class PermissiveTests(ServerTestCase):
    """
    By default any origin may use the server.
    """

    def test_origin_echoed(self) -> Any:
        """
        A response to a request with an Origin allows that origin, varies by
        Origin and exposes the headers a client needs to read.
        """

        async def run() -> None:
            server = await self.start_server()
            server.add_account("alice")
            response, body = await server.request("GET", "/.well-known/jmap", headers={b"origin": [ORIGIN]})
            self.assertEqual(response.code, 200, body)
            self.assertEqual(header(response, b"access-control-allow-origin"), ORIGIN)
            self.assertIn(b"origin", names(header(response, b"vary")))
            exposed = names(header(response, b"access-control-expose-headers"))
            self.assertTrue(
                {b"etag", b"content-disposition", b"retry-after", b"www-authenticate"} <= exposed, exposed
            )

        return ensureDeferred(run())

    def test_errors_too(self) -> Any:
        """
        Error responses (a 401 with its challenge, a 404) carry the CORS
        headers too, so a browser client can read why it failed.
        """

        async def run() -> None:
            server = await self.start_server()
            server.add_account("alice")
            for path, auth, status in (("/.well-known/jmap", None, 401), ("/nope", "alice", 404)):
                response, body = await server.request("GET", path, headers={b"origin": [ORIGIN]}, auth=auth)
                assert_problem(self, response, body, status)
                self.assertEqual(header(response, b"access-control-allow-origin"), ORIGIN)

        return ensureDeferred(run())

    def test_no_origin(self) -> Any:
        """
        A request without an Origin gets no CORS headers, but the response
        still varies by Origin (so a cache does not serve it to a browser
        that sends one).
        """

        async def run() -> None:
            server = await self.start_server()
            server.add_account("alice")
            response, body = await server.request("GET", "/.well-known/jmap")
            self.assertEqual(response.code, 200, body)
            self.assertIsNone(header(response, b"access-control-allow-origin"))
            self.assertIn(b"origin", names(header(response, b"vary")))

        return ensureDeferred(run())

    def test_preflight(self) -> Any:
        """
        A preflight OPTIONS on the API, upload and Session URLs is answered
        204 without credentials, allowing the origin, the methods and the
        Authorization and Content-Type headers, with a max-age.
        """

        async def run() -> None:
            server = await self.start_server()
            alice = server.add_account("alice")
            for path, method in (
                ("/jmap/", b"POST"),
                (f"/jmap/upload/{alice}/", b"POST"),
                ("/.well-known/jmap", b"GET"),
                (f"/jmap/download/{alice}/Gblob/name", b"GET"),
            ):
                response, body = await server.request(
                    "OPTIONS", path, headers=preflight_headers(ORIGIN, method), auth=None
                )
                self.assertEqual((response.code, body), (204, b""), path)
                self.assertEqual(header(response, b"access-control-allow-origin"), ORIGIN, path)
                self.assertIn(method.lower(), names(header(response, b"access-control-allow-methods")), path)
                self.assertTrue(
                    {b"authorization", b"content-type"}
                    <= names(header(response, b"access-control-allow-headers")),
                    path,
                )
                max_age = header(response, b"access-control-max-age")
                assert max_age is not None
                self.assertGreater(int(max_age), 0)

        return ensureDeferred(run())


class StrictTests(ServerTestCase):
    """
    With strict-cors only the listed origins get CORS headers.
    """

    def start(self) -> Any:
        return self.start_server(strict_cors=True, cors_allowed_origins=("https://good.example",))

    def test_allowed_origin(self) -> Any:
        """
        A listed origin gets the CORS headers, on requests and preflights.
        """

        async def run() -> None:
            server = await self.start()
            server.add_account("alice")
            response, body = await server.request(
                "GET", "/.well-known/jmap", headers={b"origin": [b"https://good.example"]}
            )
            self.assertEqual(response.code, 200, body)
            self.assertEqual(header(response, b"access-control-allow-origin"), b"https://good.example")
            response, body = await server.request(
                "OPTIONS", "/jmap/", headers=preflight_headers(b"https://good.example"), auth=None
            )
            self.assertEqual(response.code, 204)
            self.assertEqual(header(response, b"access-control-allow-origin"), b"https://good.example")
            self.assertIsNotNone(header(response, b"access-control-allow-methods"))

        return ensureDeferred(run())

    def test_other_origin(self) -> Any:
        """
        Another origin gets no CORS headers at all, neither on requests nor
        on preflights, so browsers keep its scripts from the responses.
        """

        async def run() -> None:
            server = await self.start()
            server.add_account("alice")
            response, body = await server.request(
                "GET", "/.well-known/jmap", headers={b"origin": [b"https://evil.example"]}
            )
            self.assertEqual(response.code, 200, body)
            response_preflight, _ = await server.request(
                "OPTIONS", "/jmap/", headers=preflight_headers(b"https://evil.example"), auth=None
            )
            for each in (response, response_preflight):
                present = [
                    name
                    for name, _ in each.headers.getAllRawHeaders()
                    if name.lower().startswith(b"access-control-")
                ]
                self.assertEqual(present, [])
                self.assertIn(b"origin", names(header(each, b"vary")))

        return ensureDeferred(run())

    def test_origin_case(self) -> Any:
        """
        Origins are compared without regard to case (scheme and host are
        case-insensitive).
        """

        async def run() -> None:
            server = await self.start()
            server.add_account("alice")
            response, _ = await server.request(
                "GET", "/.well-known/jmap", headers={b"origin": [b"https://GOOD.example"]}
            )
            self.assertEqual(header(response, b"access-control-allow-origin"), b"https://GOOD.example")

        return ensureDeferred(run())
