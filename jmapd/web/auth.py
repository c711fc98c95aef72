# -*- test-case-name: tests.web.test_auth -*-
"""
HTTP authentication in front of every JMAP resource: Basic and Bearer
credentials checked through a twisted.cred portal, failed attempts rate
limited per client address, and a short-lived memory of verified
Authorization headers so that argon2 runs once per login, not once per
request.

The memory is keyed by an HMAC of the header under a per-process random
key, never by the secret itself, and it remembers the account's auth
version: every request re-checks that version inside its own transaction
(L{run_checked}), so a password change or a revoked token takes effect at
once, even when C{jmapd-admin} made it from another process; credentials
the change left valid are verified again and go on working.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from attrs import frozen
from twisted.cred.credentials import UsernamePassword
from twisted.cred.error import UnauthorizedLogin, UnhandledCredentials
from twisted.logger import Logger

from jmapd.auth.checkers import BearerToken, IPrincipal
from jmapd.protocol.engine import Principal
from jmapd.storage import accounts
from jmapd.util.ratelimit import RateLimiter
from jmapd.util.tticache import TTICache
from jmapd.web.resource import HTTPProblem, client_address

log = Logger()

#: How long a verified Authorization header is remembered when unused.
VERIFIED_TTI = 300.0
VERIFIED_MAX = 10_000

_T = TypeVar("_T")

_CHALLENGE = b'Basic realm="jmapd", charset="UTF-8", Bearer realm="jmapd"'


@frozen
class Login:
    principal: Principal
    auth_version: int
    client: str


@frozen
class HeldCredentials:
    """
    The Authorization header and client address of a request, for a
    connection that outlives it.
    """

    header: bytes
    client: str


class AuthVersionChanged(Exception):
    """
    The credentials were valid when cached but the account's password or
    tokens changed since.
    """


def unauthorized(detail: str) -> HTTPProblem:
    return HTTPProblem(401, detail, headers={b"www-authenticate": _CHALLENGE})


def too_many(detail: str, retry_after: float) -> HTTPProblem:
    return HTTPProblem(
        429,
        detail,
        type="urn:ietf:params:jmap:error:limit",
        headers={b"retry-after": b"%d" % max(1, int(retry_after + 0.999))},
        extra={"limit": "rateLimit"},
    )


class Authenticator:
    """
    Authenticate HTTP requests for the web resources.
    """

    def __init__(self, portal: Any, clock: Any, config: Any) -> None:
        self._portal = portal
        self._config = config
        self._key = secrets.token_bytes(32)
        self._verified: TTICache[bytes, tuple[Principal, int]] = TTICache(
            clock, VERIFIED_TTI, max_entries=VERIFIED_MAX, name="verified-auth"
        )
        self._failures = RateLimiter(clock, config.rate_limit_auth.count, config.rate_limit_auth.period)
        self._per_account = RateLimiter(
            clock, config.rate_limit_authenticated.count, config.rate_limit_authenticated.period
        )
        self._anonymous = RateLimiter(
            clock, config.rate_limit_anonymous.count, config.rate_limit_anonymous.period
        )

    def _fingerprint(self, header: bytes) -> bytes:
        return hmac.new(self._key, header, hashlib.sha256).digest()

    def forget(self, header: bytes) -> None:
        self._verified.pop(self._fingerprint(header))

    async def authenticate(self, request: Any, again: bool = False) -> Login:
        """
        The login behind the request's Authorization header.

        @param again: the request was counted already (its header is
            being verified again after a credentials change), so the
            per-account rate limit is not applied a second time.

        @raise HTTPProblem: 401 with a challenge, or 429 when the client
            failed too often or the account sends too many requests.
        """
        client = client_address(request, self._config.use_forwarded_header)
        return await self._login(_authorization(request), client, again)

    def hold(self, request: Any) -> HeldCredentials:
        """
        The request's credentials, kept for a connection that outlives the
        request (a WebSocket) to verify them again with L{login_again}.
        """
        return HeldCredentials(_authorization(request), client_address(request, self._config.use_forwarded_header))

    async def login_again(self, held: HeldCredentials) -> Login:
        """
        Verify held credentials again after the account's auth version
        changed: the login they give now, or L{HTTPProblem} 401 when the
        change invalidated them.
        """
        self.forget(held.header)
        return await self._login(held.header, held.client, True)

    async def _login(self, raw: bytes, client: str, again: bool) -> Login:
        if not raw:
            if not self._anonymous.hit(client):
                raise too_many("too many unauthenticated requests", self._anonymous.retry_after(client))
            raise unauthorized("authentication is required")
        fingerprint = self._fingerprint(raw)
        cached = self._verified.get(fingerprint)
        if cached is None:
            if not self._failures.check(client):
                raise too_many(
                    "too many failed authentication attempts", self._failures.retry_after(client)
                )
            credentials = self._credentials(raw)
            try:
                _interface, avatar, _logout = await self._portal.login(credentials, None, IPrincipal)
            except (UnauthorizedLogin, UnhandledCredentials):
                self._failures.hit(client)
                log.info("authentication failed from {client}", client=client)
                raise unauthorized("the credentials are not valid") from None
            cached = avatar
            self._verified.set(fingerprint, cached)
        principal, auth_version = cached
        if not again and not self._per_account.hit(principal.account_id):
            raise too_many(
                "too many requests for this account", self._per_account.retry_after(principal.account_id)
            )
        return Login(principal, auth_version, client)

    def _credentials(self, header: bytes) -> Any:
        scheme, _, value = header.strip().partition(b" ")
        value = value.strip()
        if scheme.lower() == b"basic":
            try:
                decoded = base64.b64decode(value, validate=True)
            except ValueError:
                raise unauthorized("the Basic credentials are not valid base64") from None
            username, colon, password = decoded.partition(b":")
            if not colon:
                raise unauthorized("the Basic credentials need 'name:password'")
            return UsernamePassword(username, password)
        if scheme.lower() == b"bearer" and value:
            return BearerToken(value.decode("ascii", "replace"))
        raise unauthorized("use Basic or Bearer authentication")

    def revalidate(self, request: Any, login: Login) -> None:
        """
        Forget the request's cached verification (its auth version is
        stale).
        """
        header = _authorization(request)
        if header:
            self.forget(header)


def _authorization(request: Any) -> bytes:
    """
    The request's Authorization header as octets (empty when absent).
    """
    header = request.getHeader(b"authorization") or b""
    return header.encode("latin-1") if isinstance(header, str) else header


def check_auth_version(txn: Any, login: Login) -> None:
    """
    Inside a request's transaction: refuse the request if the account's
    credentials changed since this login was verified (or it is gone).
    """
    if accounts.auth_version(txn, login.principal.account_id) != login.auth_version:
        raise AuthVersionChanged(login.principal.name)


async def still_valid(
    database: Any, login: Login, relogin: Callable[[], Awaitable[Login]] | None
) -> Login | None:
    """
    For a connection that outlives its request (an EventSource stream, a
    WebSocket): C{login} if the account's credentials did not change since
    it was verified (one database read); else the login C{relogin} gives
    by verifying the connection's credentials again (another token of the
    account revoked leaves them valid); L{None} when they are no longer
    valid.
    """
    try:
        await database.run_interaction(check_auth_version, login)
        return login
    except AuthVersionChanged:
        pass
    if relogin is None:
        return None
    try:
        return await relogin()
    except HTTPProblem:
        return None


async def run_checked(
    authenticator: Authenticator,
    database: Any,
    request: Any,
    login: Login,
    interaction: Callable[..., _T],
    *args: Any,
    write: bool = False,
) -> _T:
    """
    Run C{interaction(txn, login, *args)} in one transaction that first
    checks that C{login} is still valid (L{check_auth_version}).

    When the account's credentials changed since the request's
    Authorization header was verified, the header is verified again, once:
    a change that leaves it valid (another of the account's tokens revoked)
    does not disturb the client, and one that invalidates it (its password
    changed, this token revoked, the account removed) is a 401.
    """

    def checked(txn: Any, login: Login, *args: Any) -> _T:
        check_auth_version(txn, login)
        return interaction(txn, login, *args)

    try:
        return await database.run_interaction(checked, login, *args, write=write)  # type: ignore[no-any-return]
    except AuthVersionChanged:
        authenticator.revalidate(request, login)
    login = await authenticator.authenticate(request, again=True)
    try:
        return await database.run_interaction(checked, login, *args, write=write)  # type: ignore[no-any-return]
    except AuthVersionChanged:
        authenticator.revalidate(request, login)
        raise unauthorized("the credentials changed; authenticate again") from None
