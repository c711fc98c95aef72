# -*- test-case-name: tests.web.test_auth -*-
"""
End-to-end tests of HTTP authentication in front of the JMAP resources:
Basic and Bearer credentials, changes to them taking effect at once, and
the rate limits.
"""

from __future__ import annotations

import base64
import functools
from typing import Any

import orjson
from twisted.internet.defer import ensureDeferred

from jmapd.auth.passwords import hash_password
from jmapd.config import RateLimit
from jmapd.protocol.engine import CORE
from jmapd.storage import accounts
from tests import pg
from tests.support import PASSWORD, ServerTestCase, basic
from tests.web.test_api import assert_problem

NEW_PASSWORD = "new secret"
SECRET = "jmapd-test-token-0123456789abcdef"
ECHO = orjson.dumps({"using": [CORE], "methodCalls": [["Core/echo", {}, "c0"]]})


@functools.cache
def password_hash(password: str) -> str:
    """
    argon2 is slow on purpose: hash each test password once per process.
    """
    return hash_password(password)


def bearer(secret: str) -> bytes:
    return b"Bearer " + secret.encode("ascii")


async def call(server: Any, authorization: bytes | None) -> tuple[Any, bytes]:
    """
    POST a Core/echo request with exactly this Authorization header.
    """
    headers = {b"content-type": [b"application/json"]}
    if authorization is not None:
        headers[b"authorization"] = [authorization]
    return await server.request("POST", "/jmap/", ECHO, headers, auth=None)  # type: ignore[no-any-return]


class AuthenticationTests(ServerTestCase):
    def assert_unauthorized(self, response: Any, body: bytes) -> None:
        assert_problem(self, response, body, 401)
        challenge = b", ".join(response.headers.getRawHeaders(b"www-authenticate", []))
        self.assertIn(b"Basic", challenge)

    def test_no_credentials(self) -> Any:
        """
        A request without an Authorization header is 401 with a challenge.
        """

        async def run() -> None:
            server = await self.start_server()
            server.add_account("alice")
            self.assert_unauthorized(*await call(server, None))

        return ensureDeferred(run())

    def test_wrong_password(self) -> Any:
        """
        Basic with the wrong password is 401.
        """

        async def run() -> None:
            server = await self.start_server()
            server.add_account("alice")
            self.assert_unauthorized(*await call(server, basic("alice", "wrong")))

        return ensureDeferred(run())

    def test_unknown_user(self) -> Any:
        """
        Basic for an account that does not exist is 401, answered the same
        way as a wrong password.
        """

        async def run() -> None:
            server = await self.start_server()
            server.add_account("alice")
            response, body = await call(server, basic("mallory"))
            self.assert_unauthorized(response, body)
            wrong_response, wrong_body = await call(server, basic("alice", "wrong"))
            self.assertEqual(orjson.loads(body), orjson.loads(wrong_body))

        return ensureDeferred(run())

    def test_malformed(self) -> Any:
        """
        Basic credentials that are not base64 or lack the colon, an empty
        Bearer token and unknown schemes are 401.
        """

        async def run() -> None:
            server = await self.start_server()
            server.add_account("alice")
            for header in (
                b"Basic !!!",
                b"Basic " + base64.b64encode(b"alice"),
                b"Bearer",
                b"Digest username=alice",
            ):
                self.assert_unauthorized(*await call(server, header))

        return ensureDeferred(run())

    def test_basic(self) -> Any:
        """
        Basic with the right password is accepted, repeatedly (the second
        time from the verified-header memory).
        """

        async def run() -> None:
            server = await self.start_server()
            server.add_account("alice")
            for _ in range(2):
                response, body = await call(server, basic("alice"))
                self.assertEqual(response.code, 200, body)

        return ensureDeferred(run())

    def test_bearer(self) -> Any:
        """
        A Bearer token made for an account authenticates as that account.
        """

        async def run() -> None:
            server = await self.start_server()
            server.add_account("alice")
            server.env.database.run_sync(accounts.add_token, "alice", "test", SECRET, write=True)
            response, body = await server.request(
                "GET", "/.well-known/jmap", headers={b"authorization": [bearer(SECRET)]}, auth=None
            )
            self.assertEqual(response.code, 200, body)
            self.assertEqual(orjson.loads(body)["username"], "alice")
            self.assert_unauthorized(*await call(server, bearer(SECRET + "x")))

        return ensureDeferred(run())

    def test_revoked_token(self) -> Any:
        """
        A revoked token is refused at once, although its verification was
        remembered from an earlier request.
        """

        async def run() -> None:
            server = await self.start_server()
            server.add_account("alice")
            token = server.env.database.run_sync(accounts.add_token, "alice", "test", SECRET, write=True)
            response, body = await call(server, bearer(SECRET))
            self.assertEqual(response.code, 200, body)
            server.env.database.run_sync(accounts.revoke_token, token.id, write=True)
            self.assert_unauthorized(*await call(server, bearer(SECRET)))
            self.assert_unauthorized(*await call(server, bearer(SECRET)))
            response, body = await server.request(
                "GET", "/.well-known/jmap", auth=None, headers={b"authorization": [bearer(SECRET)]}
            )
            self.assert_unauthorized(response, body)

        return ensureDeferred(run())

    def test_revoked_token_other_credentials(self) -> Any:
        """
        Revoking one token does not log out the account's other credentials:
        a remembered password login and another token still work.
        """

        async def run() -> None:
            server = await self.start_server()
            server.add_account("alice")
            revoked = server.env.database.run_sync(accounts.add_token, "alice", "one", SECRET, write=True)
            server.env.database.run_sync(accounts.add_token, "alice", "two", SECRET + "2", write=True)
            for header in (basic("alice"), bearer(SECRET + "2")):
                response, body = await call(server, header)
                self.assertEqual(response.code, 200, body)
            server.env.database.run_sync(accounts.revoke_token, revoked.id, write=True)
            for header in (basic("alice"), bearer(SECRET + "2")):
                response, body = await call(server, header)
                self.assertEqual(response.code, 200, body)

        return ensureDeferred(run())

    def test_password_change(self) -> Any:
        """
        After a password change the old password is refused at once,
        although it was remembered; the new one works.
        """

        async def run() -> None:
            server = await self.start_server()
            server.add_account("alice")
            response, body = await call(server, basic("alice"))
            self.assertEqual(response.code, 200, body)
            server.env.database.run_sync(
                accounts.set_password, "alice", password_hash(NEW_PASSWORD), write=True
            )
            self.assert_unauthorized(*await call(server, basic("alice")))
            response, body = await call(server, basic("alice", NEW_PASSWORD))
            self.assertEqual(response.code, 200, body)

        return ensureDeferred(run())

    def test_password_change_each_resource(self) -> Any:
        """
        The Session, upload and download resources, too, refuse a
        remembered password at once after it changed.
        """

        async def run() -> None:
            server = await self.start_server()
            account_id = server.add_account("alice")
            password = PASSWORD
            for method, path, status in (
                ("GET", "/.well-known/jmap", 200),
                ("POST", f"/jmap/upload/{account_id}/", 201),
                ("GET", f"/jmap/download/{account_id}/Gnope/x", 404),
            ):
                headers = {b"authorization": [basic("alice", password)]}
                response, body = await server.request(method, path, b"x", headers, auth=None)
                self.assertEqual(response.code, status, body)
                new_password = NEW_PASSWORD if password == PASSWORD else PASSWORD
                server.env.database.run_sync(
                    accounts.set_password, "alice", password_hash(new_password), write=True
                )
                self.assert_unauthorized(*await server.request(method, path, b"x", headers, auth=None))
                password = new_password
                headers = {b"authorization": [basic("alice", password)]}
                response, body = await server.request(method, path, b"x", headers, auth=None)
                self.assertEqual(response.code, status, body)

        return ensureDeferred(run())

    def test_removed_account(self) -> Any:
        """
        Once the account is removed, its remembered login is refused.
        """

        async def run() -> None:
            server = await self.start_server()
            server.add_account("alice")
            response, body = await call(server, basic("alice"))
            self.assertEqual(response.code, 200, body)
            server.env.database.run_sync(accounts.remove_account, "alice", write=True)
            self.assert_unauthorized(*await call(server, basic("alice")))

        return ensureDeferred(run())


class RateLimitTests(ServerTestCase):
    def test_failed_attempts(self) -> Any:
        """
        With rate-limit-auth 3/60s, three failed attempts are 401, the
        fourth is 429 with a Retry-After of at most the period, and while
        limited even the right password is refused (with 429).
        """

        async def run() -> None:
            server = await self.start_server(rate_limit_auth=RateLimit(3, 60.0))
            server.add_account("alice")
            for _ in range(3):
                response, body = await call(server, basic("alice", "wrong"))
                self.assertEqual(response.code, 401, body)
            response, body = await call(server, basic("alice", "wrong"))
            problem = assert_problem(self, response, body, 429, "limit")
            self.assertEqual(problem["limit"], "rateLimit")
            [retry_after] = response.headers.getRawHeaders(b"retry-after")
            self.assertTrue(1 <= int(retry_after) <= 60, retry_after)
            response, body = await call(server, basic("alice"))
            assert_problem(self, response, body, 429)

        return ensureDeferred(run())

    def test_remembered_login_not_limited(self) -> Any:
        """
        A client already logged in (its header remembered) keeps working
        while failures from its address are limited.
        """

        async def run() -> None:
            server = await self.start_server(rate_limit_auth=RateLimit(1, 60.0))
            server.add_account("alice")
            response, body = await call(server, basic("alice"))
            self.assertEqual(response.code, 200, body)
            await call(server, basic("alice", "wrong"))
            response, body = await call(server, basic("alice", "wrong"))
            assert_problem(self, response, body, 429)
            response, body = await call(server, basic("alice"))
            self.assertEqual(response.code, 200, body)

        return ensureDeferred(run())

    def test_authenticated(self) -> Any:
        """
        With rate-limit-authenticated 2/60s, an account's third request is
        429 with Retry-After; another account is not affected.
        """

        async def run() -> None:
            server = await self.start_server(rate_limit_authenticated=RateLimit(2, 60.0))
            server.add_account("alice")
            server.add_account("bob")
            for _ in range(2):
                response, body = await call(server, basic("alice"))
                self.assertEqual(response.code, 200, body)
            response, body = await call(server, basic("alice"))
            problem = assert_problem(self, response, body, 429, "limit")
            self.assertEqual(problem["limit"], "rateLimit")
            self.assertTrue(response.headers.getRawHeaders(b"retry-after"))
            response, body = await call(server, basic("bob"))
            self.assertEqual(response.code, 200, body)

        return ensureDeferred(run())

    def test_anonymous(self) -> Any:
        """
        With rate-limit-anonymous 2/60s, the third request without
        credentials from one address is 429 instead of 401.
        """

        async def run() -> None:
            server = await self.start_server(rate_limit_anonymous=RateLimit(2, 60.0))
            for _ in range(2):
                response, body = await call(server, None)
                self.assertEqual(response.code, 401, body)
            response, body = await call(server, None)
            assert_problem(self, response, body, 429)
            self.assertTrue(response.headers.getRawHeaders(b"retry-after"))

        return ensureDeferred(run())


# The same tests on PostgreSQL (see tests/pg.py).
pg.add_postgresql_variants(globals(), AuthenticationTests, RateLimitTests)
