"""
Tests for L{jmapd.web.health}: C{/health} over a real socket.
"""

from __future__ import annotations

from typing import Any

import orjson
from twisted.internet.defer import ensureDeferred

from jmapd.web import health
from tests import pg
from tests.support import ServerTestCase


class HealthTests(ServerTestCase):
    def test_ok(self) -> Any:
        """
        Without credentials, GET /health answers 200 {"status": "ok"}
        (not cached) once the database has answered, and HEAD the same
        without a body.
        """

        async def run() -> None:
            server = await self.start_server()
            response, body = await server.request("GET", "/health", auth=None)
            self.assertEqual(response.code, 200)
            self.assertEqual(orjson.loads(body), {"status": "ok"})
            self.assertIn(b"no-store", response.headers.getRawHeaders(b"cache-control")[0])
            response, body = await server.request("HEAD", "/health", auth=None)
            self.assertEqual((response.code, body), (200, b""))

        return ensureDeferred(run())

    def test_not_rate_limited(self) -> Any:
        """
        A balancer's checks do not use up the anonymous rate limit: with
        a limit of 2 a minute, the fourth check still answers 200, while
        the fourth anonymous Session request is refused.
        """

        async def run() -> None:
            server = await self.start_server(rate_limit_anonymous="2/60")
            codes = [(await server.request("GET", "/health", auth=None))[0].code for _ in range(4)]
            self.assertEqual(codes, [200, 200, 200, 200])
            sessions = [(await server.request("GET", "/.well-known/jmap", auth=None))[0].code for _ in range(4)]
            self.assertEqual(sessions[-1], 429)

        return ensureDeferred(run())

    def test_database_unreachable(self) -> Any:
        """
        When the database does not answer (here: its query fails), /health
        says 503 with a problem document (no traceback), so the node
        leaves the balancer's rotation; it answers 200 again once it does.
        """

        async def run() -> None:
            server = await self.start_server()

            def failing(txn: Any) -> None:
                txn.fetchvalue("SELECT 1 FROM no_such_table")

            patched = self.patch(health, "_ping", failing)
            response, body = await server.request("GET", "/health", auth=None)
            patched.restore()
            self.assertEqual(response.code, 503)
            problem = orjson.loads(body)
            self.assertEqual((problem["status"], problem["detail"]), (503, "the database does not answer"))
            self.assertNotIn(b"Traceback", body)
            response, _ = await server.request("GET", "/health", auth=None)
            self.assertEqual(response.code, 200)

        return ensureDeferred(run())


pg.add_postgresql_variants(globals(), HealthTests)
