"""
Tests for L{jmapd.push.subscription}: PushSubscription/get and /set (RFC
8620 section 7.2) and the delivery of PushVerification and StateChange
objects to a real HTTP receiver started in the test, with a
L{task.Clock} for retries, throttling and timeouts.
"""

from __future__ import annotations

import base64
import io
import os
import time
from types import SimpleNamespace
from typing import Any

import http_ece
import orjson
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from twisted.internet.address import IPv4Address
from twisted.internet.defer import DeferredQueue, ensureDeferred
from twisted.internet.error import DNSLookupError
from twisted.internet.interfaces import IHostnameResolver
from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer

from jmapd.admin import main as admin_main
from jmapd.config import default_config
from jmapd.protocol.engine import CORE
from jmapd.protocol.errors import SetErrorException
from jmapd.push.notifier import LocalNotifier
from jmapd.push.subscription import (
    MAX_EXPIRY,
    PushDelivery,
    check_keys,
    check_url,
    deliverable,
    encrypt,
    format_utc,
    parse_utc,
)
from jmapd.storage import accounts, migrations
from jmapd.storage.database import Database
from tests import pg
from tests.push.support import PushTestCase, Receiver, start_receiver
from tests.support import basic


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def client_keys() -> tuple[Any, bytes, dict[str, str]]:
    """
    A push client's key pair and auth secret, and the keys object for them.
    """
    private = ec.generate_private_key(ec.SECP256R1())
    public = private.public_key().public_bytes(Encoding.X962, PublicFormat.UncompressedPoint)
    auth = b"0123456789abcdef"
    return private, auth, {"p256dh": b64(public), "auth": b64(auth)}


class ValueTests(SynchronousTestCase):
    def test_url(self) -> None:
        """
        Only https:// URLs are accepted, except http:// to a loopback
        address when push-allow-insecure is set.
        """
        self.assertEqual(check_url("https://push.example/x?a=1", False), "https://push.example/x?a=1")
        self.assertEqual(check_url("http://127.0.0.1:9/p", True), "http://127.0.0.1:9/p")
        self.assertEqual(check_url("http://[::1]:9/p", True), "http://[::1]:9/p")
        for url, insecure in [
            ("http://127.0.0.1/p", False),
            ("http://push.example/p", True),
            ("ftp://push.example/p", True),
            ("https://user@push.example/", False),
            ("push.example", False),
            (42, False),
        ]:
            with self.assertRaises(SetErrorException) as caught:
                check_url(url, insecure)
            self.assertEqual(caught.exception.error.properties, ("url",))

    def test_keys(self) -> None:
        """
        keys need a P-256 public key and a 16-byte auth secret in URL-safe
        base64; anything else is invalidProperties on keys.
        """
        _, _, keys = client_keys()
        self.assertEqual(check_keys(keys), (keys["p256dh"], keys["auth"]))
        self.assertIsNone(check_keys(None))
        for bad in [{"p256dh": keys["p256dh"]}, {**keys, "auth": b64(b"short")}, {**keys, "p256dh": b64(b"x" * 65)}, "k"]:
            with self.assertRaises(SetErrorException) as caught:
                check_keys(bad)
            self.assertEqual(caught.exception.error.properties, ("keys",))

    def test_dates(self) -> None:
        """
        UTCDates are written to the second with a Z and read back; other
        forms are not UTCDates.
        """
        self.assertEqual(format_utc(1530843269.7), "2018-07-06T02:14:29Z")
        self.assertEqual(parse_utc("2018-07-06T02:14:29Z"), 1530843269.0)
        self.assertIsNone(parse_utc("2018-07-06T02:14:29+01:00"))
        self.assertIsNone(parse_utc("yesterday"))

    def test_encrypt(self) -> None:
        """
        An encrypted body is RFC 8291 aes128gcm: the client decrypts it
        with its private key and auth secret.
        """
        private, auth, keys = client_keys()
        body = encrypt(b'{"@type":"StateChange"}', (keys["p256dh"], keys["auth"]))
        self.assertNotIn(b"StateChange", body)
        clear = http_ece.decrypt(body, private_key=private, auth_secret=auth, version="aes128gcm")
        self.assertEqual(clear, b'{"@type":"StateChange"}')


class PublicNetworkTests(SynchronousTestCase):
    """
    RFC 8620 section 8.6: the server MUST ensure a push URL is externally
    resolvable, so that a client cannot make it POST to its own network.
    """

    def test_internal_literal_refused(self) -> None:
        """
        An https:// URL naming a loopback, private, link-local or reserved
        address (also as an IPv4-mapped IPv6 address) or localhost is
        invalidProperties; a public address is accepted, and with
        push-allow-insecure loopback ones are too (tests).
        """
        for url in (
            "https://127.0.0.1/p",
            "https://10.1.2.3/p",
            "https://192.168.0.1:8443/p",
            "https://169.254.169.254/latest/meta-data",
            "https://100.64.0.1/p",
            "https://0.0.0.0/p",
            "https://[::1]/p",
            "https://[fd00::1]/p",
            "https://[::ffff:10.0.0.1]/p",
            "https://localhost/p",
            "https://224.0.0.1/p",
        ):
            with self.assertRaises(SetErrorException, msg=url) as caught:
                check_url(url, False)
            self.assertEqual(caught.exception.error.properties, ("url",))
        self.assertEqual(check_url("https://93.184.216.34/p", False), "https://93.184.216.34/p")
        self.assertEqual(check_url("https://[2606:4700::1]/p", False), "https://[2606:4700::1]/p")
        self.assertEqual(check_url("https://127.0.0.1:9/p", True), "https://127.0.0.1:9/p")

    def delivery(self, allow_insecure: bool, address: str) -> tuple[PushDelivery, MemoryReactorClock]:
        """
        A delivery with its real HTTP client on a memory reactor whose
        resolver answers C{address} for every name.
        """
        reactor = MemoryReactorClock()

        @implementer(IHostnameResolver)
        class Resolver:
            def resolveHostName(self, receiver: Any, name: str, portNumber: int = 0, *args: Any) -> Any:
                receiver.resolutionBegan(None)
                receiver.addressResolved(IPv4Address("TCP", address, portNumber))
                receiver.resolutionComplete()

        reactor.installNameResolver(Resolver())
        config = default_config(push_allow_insecure=allow_insecure)
        env = SimpleNamespace(config=config)
        return PushDelivery(env, LocalNotifier(), reactor, reactor), reactor

    def test_name_resolving_to_internal_address(self) -> None:
        """
        A push to a name that resolves to an internal address never
        connects: the POST fails as a failed lookup would.
        """
        delivery, reactor = self.delivery(False, "10.0.0.7")
        d = ensureDeferred(delivery._send("https://push.example/p", None, {"@type": "StateChange"}))
        self.failureResultOf(d, DNSLookupError)
        self.assertEqual(reactor.tcpClients, [])

    def test_name_resolving_to_public_address(self) -> None:
        """
        A name resolving to a public address is connected to; with
        push-allow-insecure so is a loopback address.
        """
        for allow_insecure, address in ((False, "93.184.216.34"), (True, "127.0.0.1")):
            delivery, reactor = self.delivery(allow_insecure, address)
            d = ensureDeferred(delivery._send("https://push.example/p", None, {"@type": "StateChange"}))
            self.assertNoResult(d)
            self.assertEqual([client[:2] for client in reactor.tcpClients], [(address, 443)])
            d.cancel()
            self.failureResultOf(d)


class SubscriptionTestCase(PushTestCase):
    async def start(self, **config: Any) -> None:
        await self.start_push_server(**config)
        self.receiver, self.url = start_receiver(self)
        self.outcomes: DeferredQueue[Any] = DeferredQueue()
        self.hub.delivery.observers.append(lambda sid, outcome: self.outcomes.put((sid, outcome)))

    def retry_times(self) -> list[float]:
        """
        When the delivery's scheduled POSTs are due, on the test clock.
        """
        return [c.getTime() for c in self.clock.getDelayedCalls() if c.func == self.hub.delivery._fire]

    async def call(self, name: str, arguments: dict[str, Any]) -> list[Any]:
        response = await self.server.api([[name, arguments, "0"]])
        return response["methodResponses"][0]  # type: ignore[no-any-return]

    async def create(self, **properties: Any) -> dict[str, Any]:
        subscription = {"deviceClientId": "device-1", "url": self.url, **properties}
        name, result, _ = await self.call("PushSubscription/set", {"create": {"c": subscription}})
        self.assertEqual(name, "PushSubscription/set", result)
        return result  # type: ignore[no-any-return]

    async def subscribe(self, **properties: Any) -> str:
        """
        Create a subscription and verify it with the code pushed to the
        receiver; its id.
        """
        created = (await self.create(**properties))["created"]["c"]
        verification = await self.receiver.next_json()
        self.assertEqual(await self.outcomes.get(), (created["id"], "verification sent"))
        _, result, _ = await self.call(
            "PushSubscription/set",
            {"update": {created["id"]: {"verificationCode": verification["verificationCode"]}}},
        )
        self.assertIn(created["id"], result["updated"])
        return created["id"]  # type: ignore[no-any-return]


class MethodTests(SubscriptionTestCase):
    def test_create_pushes_verification(self) -> None:
        """
        Creating a subscription answers id, keys and expires (at most 7
        days away) and at once POSTs a PushVerification as JSON with a TTL.
        """

        async def run() -> None:
            await self.start()
            before = self.clock.seconds()
            result = await self.create(types=None)
            created = result["created"]["c"]
            self.assertNotIn("accountId", result)
            self.assertEqual(created["keys"], None)
            self.assertLessEqual(parse_utc(created["expires"]), before + MAX_EXPIRY + 1)
            self.assertGreater(parse_utc(created["expires"]), before + MAX_EXPIRY - 60)
            headers, body = await self.receiver.posts.get()
            self.assertEqual(headers.getRawHeaders(b"content-type"), [b"application/json"])
            self.assertTrue(headers.getRawHeaders(b"ttl"))
            verification = orjson.loads(body)
            self.assertEqual(verification["@type"], "PushVerification")
            self.assertEqual(verification["pushSubscriptionId"], created["id"])
            self.assertGreaterEqual(len(verification["verificationCode"]), 32)

        return ensureDeferred(run())

    def test_verification_code(self) -> None:
        """
        The code is not readable before the client sets it; a wrong code is
        invalidProperties; the pushed code verifies the subscription.
        """

        async def run() -> None:
            await self.start()
            created = (await self.create())["created"]["c"]
            code = (await self.receiver.next_json())["verificationCode"]
            _, got, _ = await self.call("PushSubscription/get", {"ids": None})
            self.assertEqual(
                got["list"],
                [{"id": created["id"], "deviceClientId": "device-1", "verificationCode": None,
                  "expires": created["expires"], "types": None}],
            )
            self.assertNotIn("state", got)
            _, result, _ = await self.call(
                "PushSubscription/set", {"update": {created["id"]: {"verificationCode": "guess"}}}
            )
            self.assertEqual(result["notUpdated"][created["id"]]["type"], "invalidProperties")
            _, result, _ = await self.call(
                "PushSubscription/set", {"update": {created["id"]: {"verificationCode": code}}}
            )
            self.assertEqual(result["updated"], {created["id"]: None})
            _, got, _ = await self.call("PushSubscription/get", {"ids": [created["id"]]})
            self.assertEqual(got["list"][0]["verificationCode"], code)

        return ensureDeferred(run())

    def test_private_properties(self) -> None:
        """
        url and keys are never returned: asking for them is forbidden.
        The methods take no accountId.
        """

        async def run() -> None:
            await self.start()
            name, error, _ = await self.call("PushSubscription/get", {"properties": ["url"]})
            self.assertEqual((name, error["type"]), ("error", "forbidden"))
            name, error, _ = await self.call("PushSubscription/get", {"accountId": self.account})
            self.assertEqual((name, error["type"]), ("error", "invalidArguments"))

        return ensureDeferred(run())

    def test_immutable(self) -> None:
        """
        url cannot be changed: a client must destroy and create again.
        """

        async def run() -> None:
            await self.start()
            created = (await self.create())["created"]["c"]
            _, result, _ = await self.call(
                "PushSubscription/set", {"update": {created["id"]: {"url": "https://other.example/"}}}
            )
            self.assertEqual(result["notUpdated"][created["id"]]["type"], "invalidProperties")

        return ensureDeferred(run())

    def test_https_required(self) -> None:
        """
        Without push-allow-insecure an http:// URL is invalidProperties.
        """

        async def run() -> None:
            await self.start(push_allow_insecure=False)
            result = await self.create()
            self.assertEqual(result["notCreated"]["c"]["properties"], ["url"])

        return ensureDeferred(run())

    def test_max_total(self) -> None:
        """
        An account may have at most push-max-total subscriptions.
        """

        async def run() -> None:
            await self.start(push_max_total=1)
            self.assertIn("c", (await self.create())["created"])
            self.assertEqual((await self.create())["notCreated"]["c"]["type"], "overQuota")

        return ensureDeferred(run())

    def test_expires(self) -> None:
        """
        An expiry too far away is shortened to 7 days (and the response
        says so); one in the past is invalidProperties.
        """

        async def run() -> None:
            await self.start()
            self.clock.advance(1767225600)  # 2026-01-01, so 2000 is in the past
            created = (await self.create(expires="2200-01-01T00:00:00Z"))["created"]["c"]
            self.assertLess(parse_utc(created["expires"]), self.clock.seconds() + MAX_EXPIRY + 1)
            _, result, _ = await self.call(
                "PushSubscription/set", {"update": {created["id"]: {"expires": "2200-01-01T00:00:00Z"}}}
            )
            self.assertIn("expires", result["updated"][created["id"]])
            past = await self.create(expires="2000-01-01T00:00:00Z")
            self.assertEqual(past["notCreated"]["c"]["properties"], ["expires"])

        return ensureDeferred(run())

    def test_own_subscriptions_only(self) -> None:
        """
        A user sees and changes only the subscriptions they created.
        """

        async def run() -> None:
            await self.start()
            created = (await self.create())["created"]["c"]
            self.server.add_account("bob")
            response = await self.server.api(
                [["PushSubscription/get", {"ids": [created["id"]]}, "g"],
                 ["PushSubscription/set", {"destroy": [created["id"]]}, "d"]],
                auth="bob",
            )
            got, destroyed = response["methodResponses"]
            self.assertEqual((got[1]["list"], got[1]["notFound"]), ([], [created["id"]]))
            self.assertEqual(destroyed[1]["notDestroyed"][created["id"]]["type"], "notFound")

        return ensureDeferred(run())

    def test_get_duplicate_ids(self) -> None:
        """
        An id given more than once to PushSubscription/get is in list or
        notFound once (RFC 8620 section 5.1), an unknown creation id too.
        """

        async def run() -> None:
            await self.start()
            created = (await self.create())["created"]["c"]
            _, got, _ = await self.call(
                "PushSubscription/get",
                {"ids": [created["id"], created["id"], "pnone", "pnone", "#nope", "#nope"]},
            )
            self.assertEqual([obj["id"] for obj in got["list"]], [created["id"]])
            self.assertEqual(sorted(got["notFound"]), ["#nope", "pnone"])

        return ensureDeferred(run())

    def test_destroy(self) -> None:
        """
        A destroyed subscription is gone from /get and from delivery.
        """

        async def run() -> None:
            await self.start()
            subscription_id = await self.subscribe()
            _, result, _ = await self.call("PushSubscription/set", {"destroy": [subscription_id]})
            self.assertEqual(result["destroyed"], [subscription_id])
            _, got, _ = await self.call("PushSubscription/get", {"ids": [subscription_id]})
            self.assertEqual(got["notFound"], [subscription_id])
            found = self.server.env.database.run_sync(deliverable, self.account, 0.0)
            self.assertEqual(found, [])

        return ensureDeferred(run())


class DeliveryTests(SubscriptionTestCase):
    def test_nothing_before_verification(self) -> None:
        """
        Until verified, a subscription gets nothing but the
        PushVerification: the first StateChange it gets is for a change
        made after the verification.
        """

        async def run() -> None:
            await self.start()
            created = (await self.create())["created"]["c"]
            code = (await self.receiver.next_json())["verificationCode"]
            await self.touch("Mailbox")
            await self.call("PushSubscription/set", {"update": {created["id"]: {"verificationCode": code}}})
            states = await self.touch("Email")
            change = await self.receiver.next_json()
            self.assertEqual(change, {"@type": "StateChange", "changed": {self.account: states}})

        return ensureDeferred(run())

    def test_types(self) -> None:
        """
        A subscription with types gets only those types.
        """

        async def run() -> None:
            await self.start()
            await self.subscribe(types=["Email"])
            await self.touch("Mailbox")
            states = await self.touch("Email", "Thread")
            change = await self.receiver.next_json()
            self.assertEqual(change["changed"], {self.account: {"Email": states["Email"]}})

        return ensureDeferred(run())

    def test_encrypted(self) -> None:
        """
        With keys, every POST is encrypted (Content-Encoding aes128gcm) so
        that only the client can read it.
        """

        async def run() -> None:
            await self.start()
            private, auth, keys = client_keys()
            created = (await self.create(keys=keys))["created"]["c"]
            headers, body = await self.receiver.posts.get()
            self.assertEqual(headers.getRawHeaders(b"content-encoding"), [b"aes128gcm"])
            clear = http_ece.decrypt(body, private_key=private, auth_secret=auth, version="aes128gcm")
            self.assertEqual(orjson.loads(clear)["pushSubscriptionId"], created["id"])

        return ensureDeferred(run())

    def test_throttle(self) -> None:
        """
        Changes within push-throttle of the last POST are coalesced into one
        POST when the interval ends.
        """

        async def run() -> None:
            await self.start(push_throttle=10.0)
            subscription_id = await self.subscribe()
            await self.touch("Mailbox")
            await self.receiver.next_json()
            self.assertEqual(await self.outcomes.get(), (subscription_id, "sent"))
            email = await self.touch("Email")
            thread = await self.touch("Thread")
            self.clock.advance(10)
            change = await self.receiver.next_json()
            self.assertEqual(change["changed"], {self.account: {**email, **thread}})

        return ensureDeferred(run())

    def test_retry(self) -> None:
        """
        A failed POST is retried after push-retry-interval with the same
        changes.
        """

        async def run() -> None:
            await self.start(push_retry_interval=7.0)
            subscription_id = await self.subscribe()
            self.receiver.codes = [500]
            states = await self.touch("Mailbox")
            first = await self.receiver.next_json()
            self.assertEqual(await self.outcomes.get(), (subscription_id, "failed"))
            self.clock.advance(7)
            self.assertEqual(await self.receiver.next_json(), first)
            self.assertEqual(await self.outcomes.get(), (subscription_id, "sent"))
            self.assertEqual(first["changed"], {self.account: states})

        return ensureDeferred(run())

    def test_give_up_then_later_changes(self) -> None:
        """
        After push-attempts-max failed POSTs the notification is given up,
        but the endpoint is not abandoned: the next change is pushed after
        push-attempt-interval.
        """

        async def run() -> None:
            await self.start(push_attempts_max=2, push_retry_interval=1.0, push_attempt_interval=100.0)
            subscription_id = await self.subscribe()
            self.receiver.codes = [500, 503]
            await self.touch("Mailbox")
            await self.receiver.next_json()
            self.assertEqual(await self.outcomes.get(), (subscription_id, "failed"))
            self.clock.advance(1)
            await self.receiver.next_json()
            self.assertEqual(await self.outcomes.get(), (subscription_id, "given up"))
            states = await self.touch("Email")
            self.assertEqual(self.retry_times(), [101.0])
            self.clock.advance(100)
            change = await self.receiver.next_json()
            self.assertEqual(change["changed"], {self.account: states})
            self.assertEqual(await self.outcomes.get(), (subscription_id, "sent"))

        return ensureDeferred(run())

    def test_timeout(self) -> None:
        """
        A POST that gets no answer within push-timeout counts as failed and
        is retried.
        """

        async def run() -> None:
            await self.start(push_timeout=30.0, push_retry_interval=1.0)
            subscription_id = await self.subscribe()
            self.receiver.codes = [None]
            await self.touch("Mailbox")
            first = await self.receiver.next_json()
            self.clock.advance(30)
            self.assertEqual(await self.outcomes.get(), (subscription_id, "failed"))
            self.clock.advance(1)
            self.assertEqual(await self.receiver.next_json(), first)
            self.assertEqual(await self.outcomes.get(), (subscription_id, "sent"))

        return ensureDeferred(run())

    def test_too_many_requests(self) -> None:
        """
        A 429 waits as long as its Retry-After asks (longer than
        push-retry-interval) before the retry.
        """

        async def run() -> None:
            await self.start(push_retry_interval=1.0)
            subscription_id = await self.subscribe()
            self.receiver.codes = [429]
            await self.touch("Mailbox")
            await self.receiver.next_json()
            self.assertEqual(await self.outcomes.get(), (subscription_id, "failed"))
            self.assertEqual(self.retry_times(), [30.0])
            self.clock.advance(30)
            await self.receiver.next_json()
            self.assertEqual(await self.outcomes.get(), (subscription_id, "sent"))

        return ensureDeferred(run())

    def test_verification_retried(self) -> None:
        """
        A PushVerification that fails is retried after push-retry-interval.
        """

        async def run() -> None:
            await self.start(push_retry_interval=3.0)
            self.receiver.codes = [500]
            created = (await self.create())["created"]["c"]
            first = await self.receiver.next_json()
            self.assertEqual(await self.outcomes.get(), (created["id"], "verification failed"))
            self.clock.advance(3)
            self.assertEqual(await self.receiver.next_json(), first)
            self.assertEqual(await self.outcomes.get(), (created["id"], "verification sent"))

        return ensureDeferred(run())


def bearer(secret: str) -> bytes:
    return b"Bearer " + secret.encode()


class CredentialTests(SubscriptionTestCase):
    """
    RFC 8620 section 7.2: a subscription is tied to the credentials that
    created it.  alice logs in with her password and with an API token;
    each credential sees only its own subscriptions, and revoking one
    (C{jmapd-admin token revoke}, C{jmapd-admin account passwd}, run while
    the server runs, as an operator would) destroys its subscriptions and
    ends their pushes.
    """

    async def start(self, **config: Any) -> None:
        config.setdefault("push_throttle", 0.0)
        await super().start(**config)
        self.token_receiver, self.token_url = start_receiver(self)

    def admin(self, *argv: str, stdin: str = "") -> str:
        """
        Run C{jmapd-admin} on the server's database; its standard output.
        """
        config = self.server.env.config
        directory = os.path.abspath(self.mktemp())
        os.makedirs(directory)
        path = os.path.join(directory, "jmapd.yaml")
        with open(path, "w", encoding="utf-8") as f:
            f.write(f"db-path: {config.db_path}\n")
            if config.db_url:
                f.write(f"db-url: {config.db_url}\n")
        out, err = io.StringIO(), io.StringIO()
        status = admin_main(["--config", path, *argv], stdin=io.StringIO(stdin), stdout=out, stderr=err, environ={})
        self.assertEqual(status, 0, err.getvalue())
        return out.getvalue()

    def make_token(self) -> tuple[str, str]:
        """
        C{jmapd-admin token create alice}: the token's secret and id.
        """
        secret = self.admin("token", "create", "alice").strip()
        (token,) = self.server.env.database.run_sync(accounts.list_tokens, "alice")
        return secret, token.id

    async def call_as(self, authorization: bytes, *calls: tuple[str, dict[str, Any]]) -> list[dict[str, Any]]:
        """
        One Request authenticated with the Authorization header
        C{authorization}; the arguments of each response.
        """
        request = {"using": [CORE], "methodCalls": [[n, a, str(i)] for i, (n, a) in enumerate(calls)]}
        response, content = await self.server.request(
            "POST", "/jmap/", orjson.dumps(request),
            {b"content-type": [b"application/json"], b"authorization": [authorization]}, auth=None,
        )
        self.assertEqual(response.code, 200, content)
        return [result for _, result, _ in orjson.loads(content)["methodResponses"]]

    async def subscribe_as(self, authorization: bytes, receiver: Receiver, url: str) -> str:
        """
        Create and verify a subscription to C{url} with the credentials of
        C{authorization}; its id.
        """
        (result,) = await self.call_as(
            authorization, ("PushSubscription/set", {"create": {"c": {"deviceClientId": "d", "url": url}}})
        )
        subscription_id: str = result["created"]["c"]["id"]
        code = (await receiver.next_json())["verificationCode"]
        self.assertEqual(await self.outcomes.get(), (subscription_id, "verification sent"))
        (result,) = await self.call_as(
            authorization, ("PushSubscription/set", {"update": {subscription_id: {"verificationCode": code}}})
        )
        self.assertEqual(result["updated"], {subscription_id: None})
        return subscription_id

    def stored(self) -> list[str]:
        """
        The ids of the subscriptions in the database.
        """
        rows = self.server.env.database.run_sync(
            lambda txn: txn.fetchall("SELECT id FROM push_subscriptions ORDER BY id")
        )
        return [row[0] for row in rows]

    async def both_pushed(self, password_id: str, token_id: str) -> None:
        """
        A change reaches both subscriptions (and the delivery holds them).
        """
        states = await self.touch("Mailbox")
        self.assertEqual((await self.receiver.next_json())["changed"], {self.account: states})
        self.assertEqual((await self.token_receiver.next_json())["changed"], {self.account: states})
        outcomes = {await self.outcomes.get(), await self.outcomes.get()}
        self.assertEqual(outcomes, {(password_id, "sent"), (token_id, "sent")})

    def test_each_credential_sees_its_own(self) -> None:
        """
        The password and a token of one account each get, change and
        destroy only the subscriptions they created; the other's are
        notFound, as if absent.  A second token of the account sees
        neither.
        """

        async def run() -> None:
            await self.start()
            secret, _ = self.make_token()
            password = basic("alice")
            (created,) = await self.call_as(
                password, ("PushSubscription/set", {"create": {"c": {"deviceClientId": "pw", "url": self.url}}})
            )
            password_id = created["created"]["c"]["id"]
            (created,) = await self.call_as(
                bearer(secret),
                ("PushSubscription/set", {"create": {"c": {"deviceClientId": "tok", "url": self.token_url}}}),
            )
            token_id = created["created"]["c"]["id"]

            for authorization, own, other in ((password, password_id, token_id), (bearer(secret), token_id, password_id)):
                listed, got, changed, destroyed = await self.call_as(
                    authorization,
                    ("PushSubscription/get", {"ids": None}),
                    ("PushSubscription/get", {"ids": [own, other]}),
                    ("PushSubscription/set", {"update": {other: {"types": ["Email"]}}}),
                    ("PushSubscription/set", {"destroy": [other]}),
                )
                self.assertEqual([obj["id"] for obj in listed["list"]], [own])
                self.assertEqual(([obj["id"] for obj in got["list"]], got["notFound"]), ([own], [other]))
                self.assertEqual(changed["notUpdated"][other]["type"], "notFound")
                self.assertEqual(destroyed["notDestroyed"][other]["type"], "notFound")

            other_secret = self.admin("token", "create", "alice").strip()
            (listed,) = await self.call_as(bearer(other_secret), ("PushSubscription/get", {"ids": None}))
            self.assertEqual(listed["list"], [])
            self.assertEqual(self.stored(), sorted([password_id, token_id]))

        return ensureDeferred(run())

    def test_token_revoked(self) -> None:
        """
        C{jmapd-admin token revoke} destroys the token's subscriptions in
        its transaction, and the running delivery, which still held them,
        POSTs nothing more to them; the password's subscription goes on.
        """

        async def run() -> None:
            await self.start()
            secret, token = self.make_token()
            token_id = await self.subscribe_as(bearer(secret), self.token_receiver, self.token_url)
            password_id = await self.subscribe_as(basic("alice"), self.receiver, self.url)
            await self.both_pushed(password_id, token_id)

            self.admin("token", "revoke", token)
            self.assertEqual(self.stored(), [password_id])
            states = await self.touch("Email")
            self.assertEqual((await self.receiver.next_json())["changed"], {self.account: states})
            outcomes = {await self.outcomes.get(), await self.outcomes.get()}
            self.assertEqual(outcomes, {(password_id, "sent"), (token_id, "dropped")})
            self.assertEqual(self.token_receiver.posts.pending, [])
            self.assertEqual(self.server.env.database.run_sync(deliverable, self.account, 0.0)[0].id, password_id)

        return ensureDeferred(run())

    def test_password_changed(self) -> None:
        """
        C{jmapd-admin account passwd} destroys the subscriptions made with
        the old password, and no more POSTs go to them; the new password
        is a new credential, which sees none of them, and the token's
        subscription goes on.
        """

        async def run() -> None:
            await self.start()
            secret, _ = self.make_token()
            token_id = await self.subscribe_as(bearer(secret), self.token_receiver, self.token_url)
            password_id = await self.subscribe_as(basic("alice"), self.receiver, self.url)
            await self.both_pushed(password_id, token_id)

            self.admin("account", "passwd", "alice", "--password-stdin", stdin="a new password\n")
            self.assertEqual(self.stored(), [token_id])
            (listed,) = await self.call_as(basic("alice", "a new password"), ("PushSubscription/get", {"ids": None}))
            self.assertEqual(listed["list"], [])
            (touched,) = await self.call_as(bearer(secret), ("Test/touch", {"types": ["Email"]}))
            change = await self.token_receiver.next_json()
            self.assertEqual(change["changed"], {self.account: touched["states"]})
            outcomes = {await self.outcomes.get(), await self.outcomes.get()}
            self.assertEqual(outcomes, {(password_id, "dropped"), (token_id, "sent")})
            self.assertEqual(self.receiver.posts.pending, [])

        return ensureDeferred(run())


class CredentialMigrationTests(SynchronousTestCase):
    """
    The migration that ties PushSubscriptions to credentials, on a
    database that has subscriptions from before it.
    """

    VERSION = 12

    def test_existing_subscriptions(self) -> None:
        """
        Existing subscriptions are tied to the account's current password;
        those of an account without a password to its token when it has
        exactly one, and are destroyed when it has several (nothing tells
        which one made them).  Afterwards they are delivered while that
        credential is valid and destroyed with it.
        """
        database = Database(pg.make_engine(self, migrated=False))
        self.addCleanup(database.close)
        known = migrations.migrations

        def before(engine_name: str | None = None, directory: str | None = None) -> list[tuple[int, str]]:
            return [m for m in known(engine_name, directory) if m[0] < self.VERSION]

        self.patch(migrations, "migrations", before)
        database.migrate()
        now = time.time()

        def fill(txn: Any) -> None:
            for account_id, password_hash, tokens in (
                ("aalice", "hash", ["talice"]), ("abob", None, ["tbob"]), ("acarol", None, ["tcarol1", "tcarol2"]),
            ):
                txn.execute(
                    "INSERT INTO accounts (id, name, password_hash, created_at) VALUES (?, ?, ?, ?)",
                    (account_id, account_id[1:], password_hash, now),
                )
                for token_id in tokens:
                    txn.execute(
                        "INSERT INTO tokens (id, account_id, token_hash, created_at) VALUES (?, ?, ?, ?)",
                        (token_id, account_id, token_id, now),
                    )
                txn.execute(
                    "INSERT INTO push_subscriptions (id, account_id, device_client_id, url, verification_code,"
                    " verified, expires_at, created_at) VALUES (?, ?, 'd', 'https://push.example/', 'c', 1, ?, ?)",
                    ("p" + account_id, account_id, now + 86400, now),
                )

        database.run_sync(fill, write=True)
        self.patch(migrations, "migrations", known)
        self.assertEqual(database.migrate(), known()[-1][0])

        def credentials(txn: Any) -> dict[str, str]:
            return dict(txn.fetchall("SELECT id, credential FROM push_subscriptions"))

        alice = database.run_sync(accounts.get_account_by_id, "aalice")
        self.assertEqual(
            database.run_sync(credentials), {"paalice": alice.password_credential, "pabob": "token:tbob"}
        )
        for account_id in ("aalice", "abob"):
            (found,) = database.run_sync(deliverable, account_id, now)
            self.assertEqual(found.id, "p" + account_id)
        self.assertTrue(database.run_sync(accounts.credential_is_valid, "aalice", "password:0"))
        self.assertTrue(database.run_sync(accounts.credential_is_valid, "abob", "token:tbob"))
        self.assertFalse(database.run_sync(accounts.credential_is_valid, "abob", "password:0"))
        self.assertFalse(database.run_sync(accounts.credential_is_valid, "abob", "token:talice"))
        database.run_sync(accounts.set_password, "alice", "other", write=True)
        database.run_sync(accounts.revoke_token, "tbob", write=True)
        self.assertEqual(database.run_sync(credentials), {})
        self.assertFalse(database.run_sync(accounts.credential_is_valid, "aalice", "password:0"))
        self.assertTrue(database.run_sync(accounts.credential_is_valid, "aalice", "password:1"))


pg.add_postgresql_variants(globals(), CredentialTests, CredentialMigrationTests)
