"""
Tests for L{jmapd.service}: the service over TLS, a port already in use,
embedding in another application's service tree, and the periodic
maintenance.
"""

from __future__ import annotations

import os
from typing import Any

import orjson
from treq.client import HTTPClient
from twisted.application.service import MultiService, Service
from twisted.internet import reactor
from twisted.internet.defer import ensureDeferred
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.internet.error import ConnectionRefusedError
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.ssl import Certificate, optionsForClientTLS
from twisted.internet.task import deferLater
from twisted.trial.unittest import SkipTest
from twisted.web.client import Agent, HTTPConnectionPool
from twisted.web.iweb import IPolicyForHTTPS
from zope.interface import implementer

from jmapd.config import default_config
from jmapd.mail import MAIL
from jmapd.protocol.engine import CORE
from jmapd.service import JMAPService, StartupError, makeService
from jmapd.storage import blobs as blob_storage
from jmapd.storage import changelog, mailboxes
from jmapd.storage import identities as identity_storage
from jmapd.storage import principals as principal_storage
from tests import pg
from tests.support import Server, ServerTestCase, basic
from tests.test_endpoints import make_certificate


@implementer(IPolicyForHTTPS)
class _TrustOnly:
    """
    Trust only the certificate in C{cert_path}, checked for the name
    C{localhost} whatever host the URL names.
    """

    def __init__(self, cert_path: str) -> None:
        with open(cert_path, "rb") as f:
            self._options = optionsForClientTLS("localhost", trustRoot=Certificate.loadPEM(f.read()))

    def creatorForNetloc(self, hostname: bytes, port: int) -> Any:
        return self._options


class TLSTests(ServerTestCase):
    """
    With jmap-cert-path and jmap-key-path the listener speaks HTTPS with
    that certificate.
    """

    def start_tls_server(self) -> Any:
        """
        Start a server with a fresh self-signed certificate; returns a
        Deferred firing with (server, treq client trusting that
        certificate, https base URL).
        """
        cert_path, key_path = make_certificate(os.path.abspath(self.mktemp()))

        async def started() -> tuple[Server, HTTPClient, str]:
            server = await self.start_server(jmap_cert_path=cert_path, jmap_key_path=key_path)
            pool = HTTPConnectionPool(reactor, persistent=False)
            client = HTTPClient(Agent(reactor, contextFactory=_TrustOnly(cert_path), pool=pool))
            base = f"https://127.0.0.1:{server.service.port.getHost().port}"
            return server, client, base

        return ensureDeferred(started())

    def test_unauthenticatedOverTLS(self) -> None:
        """
        The session resource answers over TLS, verified against the test's
        certificate: without credentials, 401 with a problem+json body and
        a challenge.
        """

        async def run() -> None:
            _server, client, base = await self.start_tls_server()
            response = await client.get(base + "/.well-known/jmap")
            body = await response.content()
            self.assertEqual(response.code, 401)
            self.assertEqual(
                response.headers.getRawHeaders(b"content-type"), [b"application/problem+json"]
            )
            self.assertEqual(orjson.loads(body)["status"], 401)
            self.assertTrue(response.headers.hasHeader(b"www-authenticate"))

        return ensureDeferred(run())

    def test_sessionOverTLS(self) -> None:
        """
        With credentials the session comes back over TLS, and since
        jmap-url is derived its URLs are https ones at the listening port.
        """

        async def run() -> None:
            server, client, base = await self.start_tls_server()
            server.add_account("alice")
            response = await client.get(
                base + "/.well-known/jmap", headers={b"authorization": [basic("alice")]}
            )
            body = await response.content()
            self.assertEqual(response.code, 200, body)
            session = orjson.loads(body)
            self.assertEqual(session["username"], "alice")
            self.assertEqual(session["apiUrl"], base + "/jmap/")
            self.assertTrue(session["uploadUrl"].startswith(base + "/"))
            self.assertTrue(server.env.config.jmap_url_defaulted)

        return ensureDeferred(run())

    def test_apiOverTLS(self) -> None:
        """
        A JMAP request over TLS is answered as over plain HTTP.
        """

        async def run() -> None:
            server, client, base = await self.start_tls_server()
            server.add_account("alice")
            request = {"using": ["urn:ietf:params:jmap:core"], "methodCalls": [["Core/echo", {"x": 1}, "c0"]]}
            response = await client.post(
                base + "/jmap/",
                data=orjson.dumps(request),
                headers={b"authorization": [basic("alice")], b"content-type": [b"application/json"]},
            )
            body = await response.content()
            self.assertEqual(response.code, 200, body)
            self.assertEqual(orjson.loads(body)["methodResponses"], [["Core/echo", {"x": 1}, "c0"]])

        return ensureDeferred(run())

    def test_plainHTTPSessionURLs(self) -> None:
        """
        Without TLS the derived session URLs are http ones: the scheme
        follows the listener.
        """

        async def run() -> None:
            server = await self.start_server()
            server.add_account("alice")
            response, body = await server.request("GET", "/.well-known/jmap")
            self.assertEqual(response.code, 200, body)
            self.assertEqual(orjson.loads(body)["apiUrl"], server.base + "/jmap/")

        return ensureDeferred(run())

    def test_unusableCertificate(self) -> None:
        """
        A certificate file OpenSSL cannot load (the configuration only
        checks that it is PEM) stops start-up with a L{StartupError} naming
        the keys, not an OpenSSL traceback.
        """
        directory = os.path.abspath(self.mktemp())
        cert_path, key_path = make_certificate(directory)
        with open(cert_path, "w") as f:
            f.write("-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydGlmaWNhdGU=\n-----END CERTIFICATE-----\n")
        config = default_config(
            lmtp_port=0,
            jmap_port=0,
            jmap_bind_addr="127.0.0.1",
            db_path=os.path.join(directory, "data"),
            worker_pool_size=1,
            jmap_cert_path=cert_path,
            jmap_key_path=key_path,
        )
        service = makeService(config, reactor)
        service.startService()
        self.addCleanup(service.stopService)
        error = self.failureResultOf(service.web.listening, StartupError).value
        self.assertIn("jmap-cert-path", str(error))
        self.assertIs(service.web.startup_error, error)
        self.assertIsNone(service.port)


class PortInUseTests(ServerTestCase):
    """
    A port another listener holds stops start-up with an operator's
    message.
    """

    def test_listeningFails(self) -> None:
        """
        A second service on the first one's port: C{web.listening} fails
        with a L{StartupError} naming jmap-port and the port, and the
        service holds no port.
        """

        async def run() -> None:
            first = await self.start_server()
            port = first.service.port.getHost().port
            config = default_config(
                lmtp_port=0,
                jmap_port=port,
                jmap_bind_addr="127.0.0.1",
                db_path=os.path.abspath(self.mktemp()),
                worker_pool_size=1,
            )
            second = makeService(config, reactor)
            second.startService()
            self.addCleanup(second.stopService)
            error = await self.assertFailure(second.web.listening, StartupError)
            self.assertIn("jmap-port", str(error))
            self.assertIn(f"port {port}", str(error))
            self.assertIs(second.web.startup_error, error)
            self.assertIsNone(second.port)

        return ensureDeferred(run())


class _Recorder(Service):
    """
    A neighbour service that records when it is started and stopped.
    """

    def __init__(self) -> None:
        self.events: list[str] = []

    def startService(self) -> None:
        super().startService()
        self.events.append("start")

    def stopService(self) -> None:
        super().stopService()
        self.events.append("stop")


class RequestDeadlineTests(ServerTestCase):
    """
    The HTTP listener gives clients http-request-timeout seconds to send a
    request (tests.web.test_root has the behaviour).
    """

    def test_siteHasDeadline(self) -> None:
        """
        The site gets http-request-timeout and the service's reactor, which
        runs the deadline (never the global reactor picked up behind the
        service's back).
        """

        async def run() -> None:
            server = await self.start_server(http_request_timeout=7.5)
            site = server.service.web.site
            self.assertEqual(site.request_timeout, 7.5)
            self.assertIs(site.reactor, server.service.reactor)

        return ensureDeferred(run())


class EmbeddingTests(ServerTestCase):
    """
    jmapd's service inside another application's service tree, as
    docs/embedding.md shows it.
    """

    def test_besideAnotherService(self) -> None:
        """
        Started through a parent L{MultiService}, jmapd answers HTTP next to
        the other service; stopping the parent stops both, stops the worker
        threads and closes the port.
        """

        async def run() -> None:
            config = default_config(
                lmtp_port=0,
                jmap_port=0,
                jmap_bind_addr="127.0.0.1",
                db_path=os.path.abspath(self.mktemp()),
                worker_pool_size=2,
            )
            parent = MultiService()
            neighbour = _Recorder()
            neighbour.setServiceParent(parent)
            jmap = makeService(config, reactor)
            self.assertIsInstance(jmap, JMAPService)
            jmap.setServiceParent(parent)
            parent.startService()
            self.addCleanup(lambda: parent.stopService() if parent.running else None)

            await jmap.web.listening
            port = jmap.port.getHost().port
            server = Server(jmap)
            server.add_account("alice")
            response = await server.api([["Core/echo", {"hello": "world"}, "c0"]])
            self.assertEqual(response["methodResponses"], [["Core/echo", {"hello": "world"}, "c0"]])

            await parent.stopService()
            self.assertEqual(neighbour.events, ["start", "stop"])
            self.assertFalse(jmap.running)
            self.assertTrue(jmap.env.workers.pool.joined)
            self.assertIsNone(jmap.port)
            client = TCP4ClientEndpoint(reactor, "127.0.0.1", port)
            await self.assertFailure(
                client.connect(Factory.forProtocol(Protocol)), ConnectionRefusedError
            )

        return ensureDeferred(run())

    def test_restart(self) -> None:
        """
        The worker pool and the listener come back after a stop and start
        of the same service (a parent may restart its children).
        """

        async def run() -> None:
            server = await self.start_server()
            service = server.service
            await service.stopService()
            service.startService()
            await service.web.listening
            restarted = Server(service)
            response, _body = await restarted.request("GET", "/.well-known/jmap", auth=None)
            self.assertEqual(response.code, 401)

        return ensureDeferred(run())


class MaintenanceTests(ServerTestCase):
    """
    L{JMAPService.maintain}: expired uploads and changelog compaction.
    """

    def test_expiredUploadRemoved(self) -> None:
        """
        An upload past its expiry loses its row and, since nothing else
        refers to it, its file; an upload not yet expired keeps both.
        """

        async def run() -> None:
            server = await self.start_server()
            env = server.env
            account = server.add_account("alice")
            now = reactor.seconds()
            expired = env.blobs.put(b"expired upload")
            kept = env.blobs.put(b"fresh upload")
            env.database.run_sync(
                blob_storage.add_blob, account, expired, 14, "text/plain", now - 100, now - 1, write=True
            )
            env.database.run_sync(
                blob_storage.add_blob, account, kept, 12, "text/plain", now, now + 3600, write=True
            )

            await server.service.maintain()

            self.assertIsNone(env.database.run_sync(blob_storage.get_blob, account, expired))
            self.assertFalse(env.blobs.exists(expired))
            self.assertIsNotNone(env.database.run_sync(blob_storage.get_blob, account, kept))
            self.assertTrue(env.blobs.exists(kept))

        return ensureDeferred(run())

    def test_searchBackfill(self) -> None:
        """
        Maintenance indexes Emails that have no full-text index entry
        (stored before the index existed), so text search finds them.
        """

        if pg.engine_of(self) == pg.POSTGRESQL:
            raise SkipTest("PostgreSQL indexes at ingest and has no backfill (nothing predates its index)")

        async def run() -> None:
            server = await self.start_server()
            account_id = server.add_account("alice")
            raw = (
                b"From: ann@example.org\r\nTo: alice@example.org\r\nSubject: quarterly zeppelin\r\n"
                b"Message-ID: <z1@example.org>\r\n\r\nAbout the zeppelin.\r\n"
            )
            _, content = await server.request(
                "POST", f"/jmap/upload/{account_id}/", raw, {b"content-type": [b"message/rfc822"]}
            )
            blob = orjson.loads(content)
            inbox = server.env.database.run_sync(mailboxes.find_by_role, account_id, "inbox")
            using = [CORE, MAIL]
            await server.api(
                [["Email/import", {"accountId": account_id, "emails": {
                    "e": {"blobId": blob["blobId"], "mailboxIds": {inbox: True}}}}, "0"]],
                using=using,
            )
            query = [["Email/query", {"accountId": account_id, "filter": {"text": "zeppelin"}}, "q"]]

            def forget(txn: Any) -> None:
                txn.execute("DELETE FROM email_search")
                txn.execute("DELETE FROM email_fts")

            server.env.database.run_sync(forget, write=True)
            missing = await server.api(query, using=using)
            self.assertEqual(missing["methodResponses"][0][1]["ids"], [])

            await server.service.maintain()

            found = await server.api(query, using=using)
            self.assertEqual(len(found["methodResponses"][0][1]["ids"]), 1)

        return ensureDeferred(run())

    def test_compaction(self) -> None:
        """
        With more tombstones than max-changelog-entries, maintenance drops
        the oldest: /changes from before them can no longer be calculated,
        while a state after the dropped ones still gets its changes; the
        sharing sight log below the new floor goes too, the rest stays.
        """

        async def run() -> None:
            server = await self.start_server(max_changelog_entries=2)
            env = server.env
            account = server.add_account("alice")
            ids = [f"f{i}" for i in range(5)]

            def history(txn: Any) -> int:
                for object_id in ids:
                    changelog.record_change(txn, account, "Foo", object_id, changelog.CREATED)
                before = changelog.get_modseq(txn, account, "Foo")
                for object_id in ids:
                    changelog.record_change(txn, account, "Foo", object_id, changelog.DESTROYED)
                return before

            before = env.database.run_sync(history, write=True)
            current = env.database.run_sync(changelog.get_modseq, account, "Foo")
            env.database.run_sync(
                lambda txn: [
                    principal_storage.record_sight(txn, account, "Foo", ["p1"], [f"s{modseq}"], modseq)
                    for modseq in (1, current)
                ],
                write=True,
            )
            known = env.database.run_sync(changelog.changes_since, account, "Foo", before, 100)
            self.assertEqual(sorted(known.destroyed), ids)

            await server.service.maintain()

            self.assertRaises(
                changelog.CannotCalculateChanges,
                env.database.run_sync,
                changelog.changes_since,
                account,
                "Foo",
                before,
                100,
            )
            recent = env.database.run_sync(changelog.changes_since, account, "Foo", current - 1, 100)
            self.assertEqual(recent.destroyed, ["f4"])
            tombstones = env.database.run_sync(
                lambda txn: txn.fetchvalue(
                    "SELECT count(*) FROM changelog WHERE account_id = ? AND destroyed = 1", (account,)
                )
            )
            self.assertEqual(tombstones, 2)
            sighted = env.database.run_sync(
                lambda txn: txn.fetchall("SELECT object_id FROM sharing_sight WHERE account_id = ?", (account,))
            )
            self.assertEqual([row[0] for row in sighted], [f"s{current}"])

        return ensureDeferred(run())

    def test_leftoversRemovedAtStart(self) -> None:
        """
        At start (and then daily) the service removes the temporary blob
        files a crash left behind more than an hour ago; one changed
        recently (a write that may still be going on, on another node
        sharing the directory) stays.
        """
        data = os.path.abspath(self.mktemp())
        directory = os.path.join(data, "blobs", "ab", "cd")
        os.makedirs(directory)
        old = os.path.join(directory, ".babcd.1.2.3")
        recent = os.path.join(directory, ".babcd.1.2.4")
        for path in (old, recent):
            with open(path, "wb") as f:
                f.write(b"half")
        two_hours_ago = reactor.seconds() - 7200
        os.utime(old, (two_hours_ago, two_hours_ago))

        async def run() -> None:
            server = await self.start_server(db_path=data)
            for _ in range(100):
                if not os.path.exists(old):
                    break
                await deferLater(reactor, 0.05, lambda: None)
            self.assertFalse(os.path.exists(old))
            self.assertTrue(os.path.exists(recent))
            self.assertIsNone(await server.service.remove_leftovers())
            self.assertTrue(os.path.exists(recent))

        return ensureDeferred(run())

    def test_notRunning(self) -> None:
        """
        Maintenance does nothing once the workers are stopped (a timer that
        fires during shutdown must not submit work).
        """

        async def run() -> None:
            server = await self.start_server()
            await server.service.stopService()
            self.assertIsNone(server.service.maintain())

        return ensureDeferred(run())


class IdentitiesAtStartTests(ServerTestCase):
    """
    Identities of data written before they followed address changes.
    """

    def test_syncedAtStart(self) -> None:
        """
        A server started on data where an address has no Identity (written
        by an older jmapd, whose Identity/get made them) gives it one once
        it has started, without any request.
        """

        async def run() -> None:
            first = await self.start_server()
            config = first.env.config
            alice = first.add_account("alice", ("alice@example.com",))
            first.env.database.run_sync(
                lambda txn: txn.execute(
                    "INSERT INTO account_addresses (address, account_id, is_alias, position) VALUES (?, ?, 1, 5)",
                    ("old-alias@example.com", alice),
                ),
                write=True,
            )
            await first.service.stopService()
            second = await self.start_server(db_path=config.db_path, db_url=config.db_url)
            await second.service.identities_synced

            def emails(txn: Any) -> list[str]:
                return sorted(i.email for i in identity_storage.get_identities(txn, alice, None))

            self.assertEqual(
                second.env.database.run_sync(emails), ["alice@example.com", "old-alias@example.com"]
            )

        return ensureDeferred(run())


pg.add_postgresql_variants(globals(), MaintenanceTests, IdentitiesAtStartTests)
