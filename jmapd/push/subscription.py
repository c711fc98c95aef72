# -*- test-case-name: tests.push.test_subscription -*-
"""
PushSubscription (RFC 8620 section 7.2): the data type, and the delivery
of PushVerification and StateChange objects to the subscribed URLs.

A subscription belongs to the credentials that authenticated the request
that created it (RFC 8620 section 7.2): the account's password (of its
current version) or one of its API tokens, as the request's L{Principal}
names it.  Only they see it: L{PushSubscriptionType} lists, changes and
destroys the subscriptions of the requesting credential alone, and any
other is C{notFound}, as if absent.  Revoking the credential (a token
revoked, the password changed) destroys them in the same transaction
(L{jmapd.storage.accounts.destroy_push_subscriptions}); delivery reads
only those whose credential is still valid and checks again before every
POST, since the revocation may come from another process (C{jmapd-admin})
that cannot tell this one.  It is not account-scoped in the protocol:
its methods take no C{accountId}, and C{/get} never returns C{url} or
C{keys}.  The server's verification code is never returned either until
the client has set it, since a client that could read it would not need
the push to prove it owns the URL.

jmapd's credentials have no expiry of their own (Basic passwords and
tokens last until changed or revoked), so, as RFC 8620 says for such
credentials, the server sets C{expires} when the client gives none and
shortens one too far away, to L{MAX_EXPIRY}.

A subscription receives the changes of the accounts its user's Session
lists, their own and the shared ones they are subscribed to, kept current
as sharing changes (one L{Follower} per user with subscriptions).

Delivery (L{PushDelivery}) follows RFC 8620 and the operator's limits:
nothing but the PushVerification goes to a URL before it is verified;
changes for one subscription are coalesced and POSTed at most once per
C{push-throttle}; a failed POST is retried after C{push-retry-interval}
(or the 429's C{Retry-After}) until C{push-attempts-max} POSTs were made,
and then that notification is given up, but the next change is pushed
again after C{push-attempt-interval}: a URL that was down for a while is
never abandoned for good.  Subscriptions with C{keys} get their body
encrypted as RFC 8291 says (C{http_ece}, aes128gcm).
"""

from __future__ import annotations

import base64
import ipaddress
import secrets
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from functools import partial
from typing import Any
from urllib.parse import urlsplit

import http_ece
import orjson
from attrs import define, field, frozen
from cryptography.hazmat.primitives.asymmetric import ec
from treq.client import HTTPClient
from twisted.internet.defer import CancelledError, Deferred, ensureDeferred, succeed
from twisted.internet.interfaces import (
    IHostnameResolver,
    IReactorPluggableNameResolver,
    IReactorTCP,
    IReactorTime,
    IResolutionReceiver,
)
from twisted.logger import Logger
from twisted.web.client import Agent, HTTPConnectionPool
from zope.interface import implementer

from jmapd.protocol.arguments import Arguments, is_id
from jmapd.protocol.engine import CORE, Context, Principal, Registry
from jmapd.protocol.errors import MethodError, invalid_arguments, invalid_properties, set_error
from jmapd.protocol.standard import DataType, register_standard_methods
from jmapd.push.follow import Follower
from jmapd.push.notifier import LocalNotifier, state_change, subscriptions_changed
from jmapd.storage.accounts import credential_is_valid, valid_credential_sql
from jmapd.storage.ids import new_id

log = Logger()

PUSH_SUBSCRIPTION = "PushSubscription"

#: The longest lifetime the server grants (RFC 8620: at least 48 hours,
#: and it SHOULD be at least 7 days); also the default.
MAX_EXPIRY = 7 * 86400.0

#: RFC 8030 TTL header: how long a push service may keep the message.
PUSH_TTL = b"86400"

#: How long the list of an account's subscriptions is trusted before it is
#: read again (other nodes may have changed it).
CACHE_SECONDS = 60.0

_LOOPBACK_NAMES = frozenset({"localhost", "localhost."})


# -- values --------------------------------------------------------------


def format_utc(seconds: float) -> str:
    """
    A UTCDate (RFC 8620 section 1.4), to the second.
    """
    return datetime.fromtimestamp(int(seconds), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_utc(value: Any) -> float | None:
    """
    Seconds since the epoch for a UTCDate, or C{None} if C{value} is not one.
    """
    if not isinstance(value, str) or not value.endswith("Z") or "T" not in value:
        return None
    try:
        when = datetime.fromisoformat(value[:-1] + "+00:00")
    except ValueError:
        return None
    return when.timestamp()


def _b64url(value: str) -> bytes:
    return base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))


def check_url(value: Any, allow_insecure: bool) -> str:
    """
    A push URL the server may POST to: C{https://} with a host, or with
    C{push-allow-insecure} also C{http://} to a loopback address.

    @raise SetErrorException: invalidProperties naming C{url}.
    """
    if not isinstance(value, str) or len(value) > 2048:
        raise invalid_properties("url must be an absolute https:// URL", "url")
    try:
        parts = urlsplit(value)
        _ = parts.port  # raises ValueError for a port that is not a number
    except ValueError:
        raise invalid_properties("url is not a valid URL", "url") from None
    if not parts.hostname or parts.username is not None or "#" in value:
        raise invalid_properties("url must be an absolute https:// URL without user name or fragment", "url")
    if parts.scheme == "http" and allow_insecure and _is_loopback(parts.hostname):
        return value
    if parts.scheme != "https":
        raise invalid_properties("url must begin with https://", "url")
    if not (allow_insecure and _is_loopback(parts.hostname)) and (
        parts.hostname.lower() in _LOOPBACK_NAMES or not _public_literal(parts.hostname)
    ):
        # RFC 8620 section 8.6: the URL must be externally resolvable.  A
        # name is checked when it is resolved (L{PublicNetworkReactor}).
        raise invalid_properties("url must not name a loopback, private or reserved address", "url")
    return value


def _is_loopback(host: str) -> bool:
    if host.lower() in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def is_public_address(host: str, allow_loopback: bool = False) -> bool:
    """
    Whether a push POST may connect to the IP address C{host}: one on the
    public Internet (not private, loopback, link-local, shared, multicast
    or reserved), or with C{allow_loopback} also a loopback one (tests).
    """
    try:
        address = ipaddress.ip_address(host.partition("%")[0])
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    if allow_loopback and address.is_loopback:
        return True
    return address.is_global and not address.is_multicast


def _public_literal(host: str) -> bool:
    """
    Whether C{host} is a host name (to be checked once resolved) or a
    public IP address.
    """
    try:
        ipaddress.ip_address(host.partition("%")[0])
    except ValueError:
        return True
    return is_public_address(host)


@implementer(IResolutionReceiver)
class _PublicAddresses:
    """
    Pass on to C{receiver} only the resolved addresses a push may go to.
    """

    def __init__(self, receiver: Any, host: str, allow_loopback: bool) -> None:
        self._receiver = receiver
        self._host = host
        self._allow_loopback = allow_loopback

    def resolutionBegan(self, resolution: Any) -> None:
        self._receiver.resolutionBegan(resolution)

    def addressResolved(self, address: Any) -> None:
        if is_public_address(str(getattr(address, "host", "")), self._allow_loopback):
            self._receiver.addressResolved(address)
        else:
            log.info(
                "push URL host {host} resolved to {address}, which is not public; not connecting to it",
                host=self._host, address=getattr(address, "host", address),
            )

    def resolutionComplete(self) -> None:
        self._receiver.resolutionComplete()


@implementer(IHostnameResolver)
class _PublicResolver:
    def __init__(self, resolver: Any, allow_loopback: Callable[[], bool]) -> None:
        self._resolver = resolver
        self._allow_loopback = allow_loopback

    def resolveHostName(
        self,
        resolutionReceiver: Any,
        hostName: str,
        portNumber: int = 0,
        addressTypes: Any = None,
        transportSemantics: str = "TCP",
    ) -> Any:
        return self._resolver.resolveHostName(
            _PublicAddresses(resolutionReceiver, hostName, self._allow_loopback()),
            hostName, portNumber, addressTypes, transportSemantics,
        )


@implementer(IReactorPluggableNameResolver, IReactorTCP, IReactorTime)
class PublicNetworkReactor:
    """
    The reactor as push delivery's HTTP client sees it: its name resolver
    drops every address that is not on the public Internet, so a push URL
    whose name resolves to the server's own network is never connected to
    (RFC 8620 section 8.6: no server-side request forgery).  The check is
    on the addresses the connection is then made to, so a name that
    resolves differently the next time gains nothing.

    @param allow_loopback: whether loopback addresses are allowed too
        (C{push-allow-insecure}, for tests); asked on every resolution.
    """

    def __init__(self, reactor: Any, allow_loopback: Callable[[], bool]) -> None:
        self._reactor = reactor
        self.nameResolver = _PublicResolver(reactor.nameResolver, allow_loopback)

    def installNameResolver(self, resolver: Any) -> Any:
        raise NotImplementedError("the push client's resolver is fixed")

    def __getattr__(self, name: str) -> Any:
        return getattr(self._reactor, name)


def check_keys(value: Any) -> tuple[str, str] | None:
    """
    The RFC 8291 keys: C{p256dh}, an uncompressed P-256 point, and C{auth},
    16 bytes, both in URL-safe base64.
    """
    if value is None:
        return None
    if not isinstance(value, dict) or set(value) != {"p256dh", "auth"}:
        raise invalid_properties("keys must be null or an object with p256dh and auth", "keys")
    p256dh, auth = value["p256dh"], value["auth"]
    try:
        if not isinstance(p256dh, str) or not isinstance(auth, str):
            raise ValueError("not strings")
        ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), _b64url(p256dh))
        if len(_b64url(auth)) != 16:
            raise ValueError("auth is not 16 bytes")
    except (ValueError, TypeError):
        raise invalid_properties(
            "keys.p256dh must be a P-256 public key and keys.auth 16 bytes, in URL-safe base64", "keys"
        ) from None
    return p256dh, auth


def check_types(value: Any) -> list[str] | None:
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value) or len(value) > 100:
        raise invalid_properties("types must be null or an array of type names", "types")
    return list(dict.fromkeys(value))


def encrypt(body: bytes, keys: tuple[str, str]) -> bytes:
    """
    The body encrypted for the subscription's keys (RFC 8291, aes128gcm),
    with a fresh sender key pair for every message.
    """
    p256dh, auth = keys
    return http_ece.encrypt(  # type: ignore[no-any-return]
        body,
        private_key=ec.generate_private_key(ec.SECP256R1()),
        dh=_b64url(p256dh),
        auth_secret=_b64url(auth),
        version="aes128gcm",
    )


@frozen
class Subscription:
    """
    What delivery needs of one verified subscription.
    """

    id: str
    account_id: str
    url: str
    keys: tuple[str, str] | None
    types: frozenset[str] | None
    expires_at: float


# -- storage -------------------------------------------------------------

_COLUMNS = (
    "id, account_id, device_client_id, url, keys_p256dh, keys_auth, verification_code,"
    " verified, expires_at, types"
)

#: The condition on a push_subscriptions row that its credential can still
#: authenticate (RFC 8620 section 7.2: nothing is pushed to a subscription
#: of revoked credentials).
_VALID_CREDENTIAL = valid_credential_sql("push_subscriptions.credential", "push_subscriptions.account_id")


def _to_subscription(row: Any) -> Subscription:
    types = orjson.loads(row[9]) if row[9] is not None else None
    keys = (row[4], row[5]) if row[4] is not None else None
    return Subscription(row[0], row[1], row[3], keys, frozenset(types) if types is not None else None, float(row[8]))


def deliverable(txn: Any, account_id: str, now: float) -> list[Subscription]:
    """
    The verified, unexpired subscriptions whose credentials are still
    valid, that receive the account's changes.
    """
    rows = txn.fetchall(
        f"SELECT {_COLUMNS} FROM push_subscriptions WHERE account_id = ? AND verified = 1 AND expires_at > ?"
        f" AND {_VALID_CREDENTIAL}",
        (account_id, now),
    )
    return [_to_subscription(row) for row in rows]


def still_deliverable(txn: Any, subscription_id: str, now: float) -> bool:
    """
    Whether the subscription still exists, unexpired, and its credentials
    are still valid: asked before every POST, since a list of
    L{deliverable} subscriptions is kept for a while and credentials may
    be revoked by another process meanwhile.
    """
    row = txn.fetchone(
        f"SELECT 1 FROM push_subscriptions WHERE id = ? AND expires_at > ? AND {_VALID_CREDENTIAL}",
        (subscription_id, now),
    )
    return row is not None


def accounts_with_subscriptions(txn: Any, now: float) -> set[str]:
    rows = txn.fetchall(
        "SELECT DISTINCT account_id FROM push_subscriptions WHERE verified = 1 AND expires_at > ?", (now,)
    )
    return {row[0] for row in rows}


def expire(txn: Any, now: float) -> int:
    """
    Delete expired subscriptions (their URL and keys with them).
    """
    txn.execute("DELETE FROM push_subscriptions WHERE expires_at <= ?", (now,))
    return txn.rowcount


# -- the data type -------------------------------------------------------


def _delivery(env: Any) -> Any:
    from jmapd.push.hub import hub_for

    hub = hub_for(env)
    return None if hub is None else hub.delivery


def _credential(ctx: Context) -> str:
    """
    The credential of the request, which its PushSubscriptions belong to.
    """
    credential = ctx.principal.credential
    if credential is None:
        raise MethodError("forbidden", "PushSubscriptions belong to the credentials of an authenticated request")
    return credential


class PushSubscriptionType(DataType):
    """
    PushSubscription/get and /set, for the subscriptions of the requesting
    credential only (RFC 8620 section 7.2: the server MUST only return
    push subscriptions created with the same credentials); those of the
    account's other credentials are C{notFound}, as if absent.
    """

    name = PUSH_SUBSCRIPTION
    capability = CORE
    #: What /get returns by default; url and keys are write-only.
    properties = ("id", "deviceClientId", "verificationCode", "expires", "types")
    private = frozenset({"url", "keys"})
    server_set = frozenset({"id"})
    immutable = frozenset({"deviceClientId", "url", "keys"})
    methods = ("get", "set")

    def is_property(self, name: str) -> bool:
        return name in self.properties or name in self.private

    def fetch(
        self, ctx: Context, account_id: str, ids: list[str] | None, properties: frozenset[str], extra: dict[str, Any]
    ) -> list[dict[str, Any]]:
        sql = f"SELECT {_COLUMNS} FROM push_subscriptions WHERE account_id = ? AND credential = ? AND expires_at > ?"
        params: list[Any] = [account_id, _credential(ctx), ctx.now]
        if ids is not None:
            ids = [i for i in ids if is_id(i)]
            if not ids:
                return []
            sql += f" AND id IN ({', '.join('?' for _ in ids)})"
            params.extend(ids)
        found = []
        for row in ctx.txn.fetchall(sql + " ORDER BY created_at, id", params):
            found.append(
                {
                    "id": row[0],
                    "deviceClientId": row[2],
                    "verificationCode": row[6] if row[7] else None,
                    "expires": format_utc(row[8]),
                    "types": orjson.loads(row[9]) if row[9] is not None else None,
                }
            )
        return found

    def do_get(self, ctx: Context, arguments: dict[str, Any]) -> dict[str, Any]:
        args = Arguments(arguments, ctx.method)
        ids = args.id_list("ids")
        properties = args.string_list("properties")
        args.done()
        if properties is not None:
            private = sorted(self.private.intersection(properties))
            if private:
                raise MethodError("forbidden", f"{', '.join(private)} cannot be read back")
            unknown = [p for p in properties if p not in self.properties]
            if unknown:
                raise invalid_arguments(f"unknown PushSubscription properties: {', '.join(unknown)}")
        wanted = frozenset(self.properties if properties is None else properties) | {"id"}
        limit = ctx.config.max_objects_in_get
        if ids is not None and len(ids) > limit:
            raise MethodError("requestTooLarge", f"{len(ids)} ids requested; maxObjectsInGet is {limit}")
        account_id = ctx.principal.account_id
        _credential(ctx)  # refused at once without one
        not_found: list[str] = []
        if ids is None:
            found = self.fetch(ctx, account_id, None, wanted, {})
        else:
            resolved = []
            for given in ids:
                real = ctx.resolve_id(given)
                if real is None:
                    # RFC 8620 section 5.1: an id given twice is reported
                    # once.
                    if given not in not_found:
                        not_found.append(given)
                elif real not in resolved:
                    resolved.append(real)
            by_id = {obj["id"]: obj for obj in self.fetch(ctx, account_id, resolved, wanted, {})}
            found = [by_id[i] for i in resolved if i in by_id]
            not_found.extend(i for i in resolved if i not in by_id)
        listed = [{key: value for key, value in obj.items() if key in wanted} for obj in found]
        return {"list": listed, "notFound": not_found}

    def do_set(self, ctx: Context, arguments: dict[str, Any]) -> dict[str, Any]:
        args = Arguments(arguments, ctx.method)
        create = args.object("create", expected="a map of creation ids to objects")
        update = args.object("update", values=lambda v: isinstance(v, dict), expected="a map of ids to PatchObjects")
        destroy = args.id_list("destroy")
        args.done()
        _credential(ctx)  # refused at once without one
        result = self.run_set(ctx, ctx.principal.account_id, None, create, update, destroy, {})
        for name in ("accountId", "oldState", "newState"):
            result.pop(name, None)
        return result

    def _expiry(self, ctx: Context, value: Any) -> float:
        latest = ctx.now + MAX_EXPIRY
        if value is None:
            return latest
        when = parse_utc(value)
        if when is None:
            raise invalid_properties("expires must be a UTCDate such as 2030-01-01T00:00:00Z", "expires")
        if when <= ctx.now:
            raise invalid_properties("expires must be in the future", "expires")
        return min(when, latest)

    def create(self, ctx: Context, account_id: str, obj: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
        device_client_id = obj.get("deviceClientId")
        if not isinstance(device_client_id, str) or not device_client_id or len(device_client_id) > 255:
            raise invalid_properties("deviceClientId must be a non-empty string", "deviceClientId")
        url = check_url(obj.get("url"), ctx.config.push_allow_insecure)
        keys = check_keys(obj.get("keys"))
        if obj.get("verificationCode") is not None:
            raise invalid_properties("verificationCode must be null when creating", "verificationCode")
        expires_at = self._expiry(ctx, obj.get("expires"))
        types = check_types(obj.get("types"))
        count = int(
            ctx.txn.fetchvalue("SELECT count(*) FROM push_subscriptions WHERE account_id = ?", (account_id,), 0)
        )
        if count >= ctx.config.push_max_total:
            raise set_error("overQuota", f"an account may have at most {ctx.config.push_max_total} PushSubscriptions")
        delivery = _delivery(ctx.env)
        if delivery is None:
            raise set_error("forbidden", "push delivery is not running on this server")
        credential = _credential(ctx)
        # A transaction revoking the credential may be running now (on
        # PostgreSQL): it updates the account's row, so holding the
        # account's writer lock orders the two, and this check then sees
        # what it committed (or it sees, and destroys, this subscription).
        ctx.txn.lock_account(account_id)
        if not credential_is_valid(ctx.txn, account_id, credential):
            raise set_error("forbidden", "the credentials of this request were revoked")
        subscription_id = new_id("p")
        code = secrets.token_hex(16)
        ctx.txn.execute(
            "INSERT INTO push_subscriptions (id, account_id, device_client_id, url, keys_p256dh, keys_auth,"
            " verification_code, verified, expires_at, types, created_at, credential)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, 0, ?, ?, ?, ?)",
            (
                subscription_id, account_id, device_client_id, url,
                keys[0] if keys else None, keys[1] if keys else None,
                code, expires_at, orjson.dumps(types).decode() if types is not None else None, ctx.now,
                credential,
            ),
        )
        ctx.txn.after_commit(lambda: delivery.verify(subscription_id, url, keys, code))
        result: dict[str, Any] = {"id": subscription_id, "expires": format_utc(expires_at)}
        for name in ("keys", "verificationCode", "types"):
            if name not in obj:
                result[name] = None
        return result

    def update(
        self,
        ctx: Context,
        account_id: str,
        object_id: str,
        current: dict[str, Any],
        new: dict[str, Any],
        touched: set[str],
        extra: dict[str, Any],
    ) -> dict[str, Any] | None:
        changed: dict[str, Any] = {}
        sets: dict[str, Any] = {}
        if "verificationCode" in touched and new.get("verificationCode") != current.get("verificationCode"):
            code = ctx.txn.fetchvalue(
                "SELECT verification_code FROM push_subscriptions WHERE id = ?", (object_id,)
            )
            given = new.get("verificationCode")
            if not isinstance(given, str) or not secrets.compare_digest(given.encode(), str(code).encode()):
                raise invalid_properties("verificationCode is not the code that was pushed", "verificationCode")
            sets["verified"] = 1
        if "expires" in touched and new.get("expires") != current.get("expires"):
            expires_at = self._expiry(ctx, new.get("expires"))
            sets["expires_at"] = expires_at
            if format_utc(expires_at) != new.get("expires"):
                changed["expires"] = format_utc(expires_at)
        if "types" in touched:
            types = check_types(new.get("types"))
            sets["types"] = orjson.dumps(types).decode() if types is not None else None
        if sets:
            assignments = ", ".join(f"{column} = ?" for column in sets)
            ctx.txn.execute(
                f"UPDATE push_subscriptions SET {assignments} WHERE id = ?", (*sets.values(), object_id)
            )
            subscriptions_changed(ctx.txn, account_id)
            delivery = _delivery(ctx.env)
            if delivery is not None:
                ctx.txn.after_commit(lambda: delivery.subscriptions_changed(account_id))
        return changed or None

    def destroy(self, ctx: Context, account_id: str, object_id: str, extra: dict[str, Any]) -> None:
        ctx.txn.execute(
            "DELETE FROM push_subscriptions WHERE id = ? AND account_id = ? AND credential = ?",
            (object_id, account_id, _credential(ctx)),
        )
        subscriptions_changed(ctx.txn, account_id)
        delivery = _delivery(ctx.env)
        if delivery is not None:
            ctx.txn.after_commit(lambda: delivery.forget(object_id, account_id))


def register(registry: Registry) -> None:
    """
    Add PushSubscription/get and /set (Core capability).
    """
    register_standard_methods(registry, PushSubscriptionType())


# -- delivery ------------------------------------------------------------


class PushFailed(Exception):
    """
    A push POST did not succeed.

    @ivar retry_after: the seconds a 429 answer asked to wait, if any.
    """

    def __init__(self, reason: str, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.retry_after = retry_after


@define
class _Endpoint:
    """
    The delivery state of one verified subscription.
    """

    subscription: Subscription
    pending: dict[str, dict[str, int]] = field(factory=dict)
    sending: dict[str, dict[str, int]] | None = None
    attempts: int = 0
    not_before: float = 0.0
    timer: Any = None
    in_flight: Deferred[Any] | None = None


def _merge(into: dict[str, dict[str, int]], changed: Mapping[str, Mapping[str, int]]) -> None:
    for account_id, states in changed.items():
        target = into.setdefault(account_id, {})
        for name, modseq in states.items():
            if modseq > target.get(name, 0):
                target[name] = modseq


class PushDelivery:
    """
    POST PushVerification and StateChange objects to subscribed URLs.

    @param clock: schedules retries, throttling and the POST timeout (a
        L{task.Clock} in tests).
    @param reactor: makes the HTTP connections.
    @param post: C{post(url, body, headers) -> Deferred[response]}; treq
        over a non-persistent pool by default.
    """

    def __init__(
        self,
        env: Any,
        notifier: Any,
        clock: Any,
        reactor: Any,
        post: Callable[[str, bytes, dict[bytes, list[bytes]]], Deferred[Any]] | None = None,
    ) -> None:
        self._env = env
        self._notifier = notifier
        self._clock = clock
        if post is None:
            public = PublicNetworkReactor(reactor, lambda: bool(self.config.push_allow_insecure))
            client = HTTPClient(Agent(public, pool=HTTPConnectionPool(reactor, persistent=False)))

            def post(url: str, body: bytes, headers: dict[bytes, list[bytes]]) -> Deferred[Any]:
                return client.post(url, data=body, headers=headers)  # type: ignore[arg-type]

        self._post = post
        self._endpoints: dict[str, _Endpoint] = {}
        #: The users (account ids) with verified subscriptions.
        self._accounts: set[str] = set()
        #: The accounts each of them follows; they listen to C{_changes},
        #: which passes on what the service's notifier reports.
        self._followers: dict[str, Follower] = {}
        self._changes = LocalNotifier()
        self._cache: dict[str, tuple[float, list[Subscription]]] = {}
        self._verifications: set[Deferred[Any]] = set()
        self.running = False
        #: Called with C{(subscription id, outcome)} once each POST's outcome
        #: ("verification sent", "verification failed", "sent", "failed",
        #: "given up") has been dealt with, retries scheduled included, and
        #: with "dropped" (or "verification dropped") when no POST was made
        #: because the subscription is gone or its credentials are no longer
        #: valid.
        self.observers: list[Callable[[str, str], None]] = []

    @property
    def config(self) -> Any:
        return self._env.config

    def start(self) -> Deferred[None]:
        """
        Listen to every account's changes and learn which accounts have
        verified subscriptions.
        """
        self.running = True
        self._notifier.subscribe(None, self.changed)
        # A notifier across nodes also says when another node changed an
        # account's subscriptions.
        others = getattr(self._notifier, "subscription_listeners", None)
        if others is not None:
            others.append(self.subscriptions_changed)
        return self.reload()

    def reload(self) -> Deferred[None]:
        """
        Read again which accounts have subscriptions (another node may have
        added some) and forget the cached lists.
        """
        now = float(self._clock.seconds())

        def loaded(accounts: set[str]) -> None:
            self._accounts = accounts | {e.subscription.account_id for e in self._endpoints.values()}
            self._cache.clear()
            self._follow_users()

        d = self._env.database.run_interaction(accounts_with_subscriptions, now)
        d.addCallback(loaded)
        return d

    def stop(self) -> None:
        """
        Stop pushing: cancel timers and POSTs in flight.
        """
        self.running = False
        self._notifier.unsubscribe(None, self.changed)
        others = getattr(self._notifier, "subscription_listeners", None)
        if others is not None and self.subscriptions_changed in others:
            others.remove(self.subscriptions_changed)
        self._accounts.clear()
        self._follow_users()
        for endpoint in self._endpoints.values():
            self._cancel(endpoint)
        self._endpoints.clear()
        for d in list(self._verifications):
            d.cancel()

    def _cancel(self, endpoint: _Endpoint) -> None:
        if endpoint.timer is not None and endpoint.timer.active():
            endpoint.timer.cancel()
        endpoint.timer = None
        if endpoint.in_flight is not None:
            endpoint.in_flight.cancel()

    # -- what the data type tells us --

    def subscriptions_changed(self, account_id: str) -> None:
        """
        A subscription of the account was verified or changed.
        """
        self._accounts.add(account_id)
        self._cache.pop(account_id, None)
        self._follow_users()

    def forget(self, subscription_id: str, account_id: str) -> None:
        """
        The subscription was destroyed: push nothing more to it.
        """
        self._cache.pop(account_id, None)
        endpoint = self._endpoints.pop(subscription_id, None)
        if endpoint is not None:
            self._cancel(endpoint)

    # -- POSTs --

    async def _send(self, url: str, keys: tuple[str, str] | None, payload: dict[str, Any]) -> None:
        body = orjson.dumps(payload)
        headers = {b"content-type": [b"application/json"], b"ttl": [PUSH_TTL]}
        if keys is not None:
            body = encrypt(body, keys)
            headers[b"content-encoding"] = [b"aes128gcm"]
        d = self._post(url, body, headers)
        d.addTimeout(self.config.push_timeout, self._clock)
        response = await d
        content = response.content()
        content.addTimeout(self.config.push_timeout, self._clock)
        await content
        if 200 <= response.code < 300:
            return
        retry_after = None
        if response.code == 429:
            value = (response.headers.getRawHeaders(b"retry-after") or [b""])[0]
            retry_after = float(value) if value.isdigit() else None
        raise PushFailed(f"HTTP {response.code}", retry_after)

    def verify(self, subscription_id: str, url: str, keys: tuple[str, str] | None, code: str) -> Deferred[bool]:
        """
        POST the PushVerification of a new subscription, with the same
        retries as any push.

        @return: fires with whether it was delivered.
        """
        payload = {"@type": "PushVerification", "pushSubscriptionId": subscription_id, "verificationCode": code}

        async def attempts() -> bool:
            for attempt in range(1, self.config.push_attempts_max + 1):
                try:
                    if not await self._still_deliverable(subscription_id):
                        log.info(
                            "PushVerification {subscription} not sent: the subscription is gone"
                            " or its credentials were revoked",
                            subscription=subscription_id,
                        )
                        self._observe(subscription_id, "verification dropped")
                        return False
                    await self._send(url, keys, payload)
                except CancelledError:
                    raise
                except Exception as error:
                    log.info(
                        "PushVerification {subscription} attempt {attempt} failed: {error}",
                        subscription=subscription_id, attempt=attempt, error=_describe(error),
                    )
                    if attempt < self.config.push_attempts_max:
                        pause = _sleep(self._clock, _retry_delay(self.config, error))
                        self._observe(subscription_id, "verification failed")
                        await pause
                    else:
                        self._observe(subscription_id, "verification failed")
                    continue
                self._observe(subscription_id, "verification sent")
                return True
            log.warn("PushVerification {subscription} given up", subscription=subscription_id)
            return False

        d = ensureDeferred(attempts())
        self._verifications.add(d)

        def done(result: Any) -> Any:
            self._verifications.discard(d)
            if hasattr(result, "check") and result.check(CancelledError):
                return False
            return result

        return d.addBoth(done)

    def _still_deliverable(self, subscription_id: str) -> Deferred[bool]:
        now = float(self._clock.seconds())
        return self._env.database.run_interaction(still_deliverable, subscription_id, now)  # type: ignore[no-any-return]

    async def _push(self, subscription: Subscription, payload: dict[str, Any]) -> bool:
        """
        POST C{payload} unless the subscription was destroyed or its
        credentials revoked since its list was read (RFC 8620 section 7.2);
        whether it was POSTed.
        """
        if not await self._still_deliverable(subscription.id):
            return False
        await self._send(subscription.url, subscription.keys, payload)
        return True

    # -- changes --

    def changed(self, account_id: str, states: Mapping[str, int]) -> None:
        """
        A notifier callback: committed changes of one account, passed on to
        the followers of the users who see it.
        """
        if self.running:
            self._changes.publish({account_id: states})

    def _follow_users(self) -> None:
        """
        A follower for each user with subscriptions, and no other.
        """
        users = self._accounts if self.running else set()
        for user_id in set(self._followers) - users:
            self._followers.pop(user_id).close()
        for user_id in sorted(users - set(self._followers)):
            follower = Follower(self._env, self._changes, Principal(user_id, user_id), partial(self._user_changed, user_id))
            self._followers[user_id] = follower
            follower.open()

    def _user_changed(self, user_id: str, account_id: str, states: Mapping[str, int]) -> None:
        """
        Committed changes of an account the user sees (their own or a
        shared one), for their subscriptions.
        """
        if user_id not in self._accounts or not self.running:
            return
        self._subscriptions(user_id).addCallback(self._dispatch, account_id, states)

    def _subscriptions(self, account_id: str) -> Deferred[list[Subscription]]:
        now = float(self._clock.seconds())
        cached = self._cache.get(account_id)
        if cached is not None and now - cached[0] < CACHE_SECONDS:
            return succeed(cached[1])

        def loaded(found: list[Subscription]) -> list[Subscription]:
            self._cache[account_id] = (now, found)
            if not found:
                self._accounts.discard(account_id)
                self._follow_users()
            return found

        d = self._env.database.run_interaction(deliverable, account_id, now)
        return d.addCallback(loaded)

    def _dispatch(self, found: list[Subscription], account_id: str, states: Mapping[str, int]) -> None:
        if not self.running:
            return
        for subscription in found:
            wanted = {
                name: modseq
                for name, modseq in states.items()
                if subscription.types is None or name in subscription.types
            }
            if not wanted:
                continue
            endpoint = self._endpoints.get(subscription.id)
            if endpoint is None:
                endpoint = self._endpoints[subscription.id] = _Endpoint(subscription)
            else:
                endpoint.subscription = subscription
            _merge(endpoint.pending, {account_id: wanted})
            self._schedule(endpoint)

    def _schedule(self, endpoint: _Endpoint) -> None:
        if not self.running:
            return
        if endpoint.in_flight is not None or endpoint.timer is not None or not endpoint.pending:
            return
        delay = endpoint.not_before - float(self._clock.seconds())
        if delay > 0:
            endpoint.timer = self._clock.callLater(delay, self._fire, endpoint)
        else:
            self._fire(endpoint)

    def _fire(self, endpoint: _Endpoint) -> None:
        endpoint.timer = None
        subscription = endpoint.subscription
        if subscription.expires_at <= float(self._clock.seconds()):
            self._endpoints.pop(subscription.id, None)
            return
        endpoint.sending, endpoint.pending = endpoint.pending, {}
        d = ensureDeferred(self._push(subscription, state_change(endpoint.sending)))
        endpoint.in_flight = d
        d.addCallbacks(self._sent, self._failed, callbackArgs=(endpoint,), errbackArgs=(endpoint,))

    def _sent(self, posted: bool, endpoint: _Endpoint) -> None:
        endpoint.in_flight = None
        if not posted:
            subscription = endpoint.subscription
            log.info(
                "push to {subscription} of {account} dropped: the subscription is gone or its credentials"
                " were revoked",
                subscription=subscription.id, account=subscription.account_id,
            )
            self.forget(subscription.id, subscription.account_id)
            self._observe(subscription.id, "dropped")
            return
        endpoint.sending = None
        endpoint.attempts = 0
        endpoint.not_before = float(self._clock.seconds()) + self.config.push_throttle
        self._schedule(endpoint)
        self._observe(endpoint.subscription.id, "sent")

    def _failed(self, failure: Any, endpoint: _Endpoint) -> None:
        endpoint.in_flight = None
        if not self.running:
            # Stopped while the POST was in flight: however it ended
            # (cancelled, or the connection failing as things shut down),
            # nothing is retried.
            return
        if self._endpoints.get(endpoint.subscription.id) is not endpoint:
            return
        endpoint.attempts += 1
        subscription = endpoint.subscription
        now = float(self._clock.seconds())
        if endpoint.attempts >= self.config.push_attempts_max:
            log.warn(
                "push to {subscription} of {account} given up after {attempts} attempts: {error}",
                subscription=subscription.id,
                account=subscription.account_id,
                attempts=endpoint.attempts,
                error=_describe(failure.value),
            )
            endpoint.sending = None
            endpoint.attempts = 0
            endpoint.not_before = now + self.config.push_attempt_interval
            outcome = "given up"
        else:
            log.info(
                "push to {subscription} failed (attempt {attempt}): {error}",
                subscription=subscription.id,
                attempt=endpoint.attempts,
                error=_describe(failure.value),
            )
            # The retry carries what failed and anything newer.
            _merge(endpoint.pending, endpoint.sending or {})
            endpoint.sending = None
            endpoint.not_before = now + _retry_delay(self.config, failure.value)
            outcome = "failed"
        self._schedule(endpoint)
        self._observe(subscription.id, outcome)

    def _observe(self, subscription_id: str, outcome: str) -> None:
        for observer in list(self.observers):
            observer(subscription_id, outcome)


def _retry_delay(config: Any, error: BaseException) -> float:
    retry_after = getattr(error, "retry_after", None)
    return max(config.push_retry_interval, retry_after or 0.0)


def _describe(error: BaseException) -> str:
    if isinstance(error, CancelledError):
        return "timed out"
    return str(error) or type(error).__name__


def _sleep(clock: Any, seconds: float) -> Deferred[None]:
    from twisted.internet.task import deferLater

    return deferLater(clock, seconds, lambda: None)
