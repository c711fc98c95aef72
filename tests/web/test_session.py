# -*- test-case-name: tests.web.test_session -*-
"""
End-to-end tests of the Session resource (RFC 8620 section 2) over real
HTTP.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import quote, urlsplit

import orjson
from twisted.internet.defer import ensureDeferred

from jmapd.mail import MAIL
from jmapd.protocol.engine import CORE
from tests import pg
from tests.support import ServerTestCase
from tests.web.test_api import TEST_CAPABILITY, assert_problem, registry_with_test_methods

_VARIABLE = re.compile(r"{([^}]*)}")


async def get_session(test: Any, server: Any, auth: str = "alice") -> dict[str, Any]:
    response, body = await server.request("GET", "/.well-known/jmap", auth=auth)
    test.assertEqual(response.code, 200, body)
    test.assertEqual(response.headers.getRawHeaders(b"content-type"), [b"application/json"])
    return orjson.loads(body)  # type: ignore[no-any-return]


def expand(template: str, **values: str) -> str:
    """
    Expand an RFC 6570 level 1 template: each value percent-encoded.
    """
    return _VARIABLE.sub(lambda m: quote(values[m.group(1)], safe=""), template)


class SessionTests(ServerTestCase):
    def test_needs_authentication(self) -> Any:
        """
        The Session without credentials is 401 with a WWW-Authenticate
        challenge offering Basic and Bearer.
        """

        async def run() -> None:
            server = await self.start_server()
            server.add_account("alice")
            response, body = await server.request("GET", "/.well-known/jmap", auth=None)
            assert_problem(self, response, body, 401)
            challenge = b", ".join(response.headers.getRawHeaders(b"www-authenticate", []))
            self.assertIn(b"Basic", challenge)
            self.assertIn(b"Bearer", challenge)

        return ensureDeferred(run())

    def test_urls(self) -> Any:
        """
        apiUrl, downloadUrl, uploadUrl and eventSourceUrl are absolute URLs
        under jmap-url, and the templates have exactly the variables of
        RFC 8620 section 2.
        """

        async def run() -> None:
            server = await self.start_server(jmap_url="https://mail.example.com:8443")
            server.add_account("alice")
            session = await get_session(self, server)
            expected_variables = {
                "apiUrl": set(),
                "downloadUrl": {"accountId", "blobId", "name", "type"},
                "uploadUrl": {"accountId"},
                "eventSourceUrl": {"types", "closeafter", "ping"},
            }
            for key, variables in expected_variables.items():
                url = session[key]
                parts = urlsplit(url)
                self.assertEqual((parts.scheme, parts.netloc), ("https", "mail.example.com:8443"), key)
                self.assertEqual(set(_VARIABLE.findall(url)), variables, key)
            self.assertEqual(session["apiUrl"], "https://mail.example.com:8443/jmap/")

        return ensureDeferred(run())

    def test_urls_work(self) -> Any:
        """
        With jmap-url derived from the listening port, the Session's URLs
        expanded as templates reach the API, upload and download resources.
        """

        async def run() -> None:
            server = await self.start_server()
            account_id = server.add_account("alice")
            session = await get_session(self, server)
            self.assertTrue(session["apiUrl"].startswith(server.base), session["apiUrl"])
            body = orjson.dumps({"using": [CORE], "methodCalls": [["Core/echo", {}, "c0"]]})
            response, content = await server.request("POST", session["apiUrl"], body)
            self.assertEqual(response.code, 200, content)
            response, content = await server.request(
                "POST",
                expand(session["uploadUrl"], accountId=account_id),
                b"data",
                {b"content-type": [b"text/plain"]},
            )
            self.assertEqual(response.code, 201, content)
            blob_id = orjson.loads(content)["blobId"]
            url = expand(
                session["downloadUrl"],
                accountId=account_id,
                blobId=blob_id,
                name="a b.txt",
                type="text/plain",
            )
            response, content = await server.request("GET", url)
            self.assertEqual(response.code, 200, content)
            self.assertEqual(content, b"data")

        return ensureDeferred(run())

    def test_core_capability(self) -> Any:
        """
        The Core capability holds every limit of RFC 8620 section 2 with the
        configured values, and the collation algorithms.
        """

        async def run() -> None:
            server = await self.start_server(
                max_size_upload=1234,
                max_concurrent_uploads=2,
                max_size_request=5678,
                max_concurrent_requests=3,
                max_calls_in_request=7,
                max_objects_in_get=11,
                max_objects_in_set=13,
            )
            server.add_account("alice")
            session = await get_session(self, server)
            core = session["capabilities"][CORE]
            self.assertEqual(
                {key: value for key, value in core.items() if key != "collationAlgorithms"},
                {
                    "maxSizeUpload": 1234,
                    "maxConcurrentUpload": 2,
                    "maxSizeRequest": 5678,
                    "maxConcurrentRequests": 3,
                    "maxCallsInRequest": 7,
                    "maxObjectsInGet": 11,
                    "maxObjectsInSet": 13,
                },
            )
            self.assertIn("i;ascii-casemap", core["collationAlgorithms"])

        return ensureDeferred(run())

    def test_accounts(self) -> Any:
        """
        The user sees their own account (personal, writable, with the
        account capabilities) and no one else's; primaryAccounts names it
        for each account capability; username is the login name.
        """

        async def run() -> None:
            server = await self.start_server(registry=registry_with_test_methods())
            alice = server.add_account("alice")
            server.add_account("bob")
            session = await get_session(self, server)
            self.assertEqual(list(session["accounts"]), [alice])
            account = session["accounts"][alice]
            self.assertEqual(account["name"], "alice")
            self.assertIs(account["isPersonal"], True)
            self.assertIs(account["isReadOnly"], False)
            self.assertEqual(account["accountCapabilities"][TEST_CAPABILITY], {})
            self.assertTrue({TEST_CAPABILITY, MAIL} <= set(account["accountCapabilities"]))
            self.assertEqual(session["primaryAccounts"][TEST_CAPABILITY], alice)
            self.assertEqual(session["primaryAccounts"][MAIL], alice)
            self.assertEqual(session["username"], "alice")
            self.assertTrue({CORE, MAIL, TEST_CAPABILITY} <= set(session["capabilities"]))

        return ensureDeferred(run())

    def test_state(self) -> Any:
        """
        The Session's state is stable across GETs, and every API response's
        sessionState is that state.
        """

        async def run() -> None:
            server = await self.start_server()
            server.add_account("alice")
            first = await get_session(self, server)
            second = await get_session(self, server)
            self.assertIsInstance(first["state"], str)
            self.assertEqual(first["state"], second["state"])
            response = await server.api([["Core/echo", {}, "c0"]])
            self.assertEqual(response["sessionState"], first["state"])

        return ensureDeferred(run())

    def test_state_per_user(self) -> Any:
        """
        Users with different Sessions (their own account) get different
        states, each matching their API responses.
        """

        async def run() -> None:
            server = await self.start_server()
            server.add_account("alice")
            server.add_account("bob")
            alice = await get_session(self, server, "alice")
            bob = await get_session(self, server, "bob")
            self.assertNotEqual(alice["state"], bob["state"])
            response = await server.api([["Core/echo", {}, "c0"]], auth="bob")
            self.assertEqual(response["sessionState"], bob["state"])

        return ensureDeferred(run())

    def test_post(self) -> Any:
        """
        The Session only answers GET: POST is 405 with Allow.
        """

        async def run() -> None:
            server = await self.start_server()
            server.add_account("alice")
            response, body = await server.request("POST", "/.well-known/jmap", b"{}")
            assert_problem(self, response, body, 405)
            self.assertIn(b"GET", b",".join(response.headers.getRawHeaders(b"allow", [])))

        return ensureDeferred(run())


# The same tests on PostgreSQL (see tests/pg.py).
pg.add_postgresql_variants(globals(), SessionTests)
