# -*- test-case-name: tests.web.test_blobs -*-
"""
End-to-end tests of uploading and downloading binary data (RFC 8620
section 6) over real HTTP: limits, caching headers, isolation between
accounts and the expiry of uploads nothing refers to.
"""

from __future__ import annotations

import os
import threading
from typing import Any
from urllib.parse import quote

import orjson
from twisted.internet import reactor
from twisted.internet.defer import Deferred, ensureDeferred
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.protocol import Protocol

from jmapd.storage import blob_directory
from jmapd.storage import blobs as blob_storage
from tests import pg
from tests.support import ServerTestCase, basic
from tests.web.test_api import assert_problem

DATA = b"Hello, JMAP!\r\n" * 10


async def upload(
    server: Any, account_id: str, data: bytes, media_type: bytes | None = b"text/plain", auth: str = "alice"
) -> tuple[Any, bytes]:
    headers = {b"content-type": [media_type]} if media_type is not None else {}
    return await server.request(  # type: ignore[no-any-return]
        "POST", f"/jmap/upload/{account_id}/", data, headers, auth=auth
    )


async def uploaded(test: Any, server: Any, account_id: str, data: bytes = DATA, auth: str = "alice") -> str:
    """
    Upload C{data}, assert it was accepted, and return its blobId.
    """
    response, body = await upload(server, account_id, data, auth=auth)
    test.assertEqual(response.code, 201, body)
    return orjson.loads(body)["blobId"]  # type: ignore[no-any-return]


def download(
    server: Any,
    account_id: str,
    blob_id: str,
    name: str = "file.txt",
    accept: str | None = None,
    auth: str = "alice",
    headers: dict[bytes, list[bytes]] | None = None,
) -> Any:
    path = f"/jmap/download/{account_id}/{blob_id}/{quote(name, safe='')}"
    if accept is not None:
        path += f"?accept={quote(accept, safe='')}"
    return server.request("GET", path, headers=headers, auth=auth)


def header(response: Any, name: bytes) -> bytes | None:
    values = response.headers.getRawHeaders(name)
    return None if values is None else b", ".join(values)


class UploadTests(ServerTestCase):
    def test_upload(self) -> Any:
        """
        An upload is 201 with accountId, blobId, type (the request's
        Content-Type) and size.
        """

        async def run() -> None:
            server = await self.start_server()
            alice = server.add_account("alice")
            response, body = await upload(server, alice, DATA, b"text/plain; charset=utf-8")
            self.assertEqual(response.code, 201, body)
            self.assertEqual(header(response, b"content-type"), b"application/json")
            result = orjson.loads(body)
            self.assertEqual(
                {key: result[key] for key in ("accountId", "type", "size")},
                {"accountId": alice, "type": "text/plain; charset=utf-8", "size": len(DATA)},
            )
            self.assertIsInstance(result["blobId"], str)

        return ensureDeferred(run())

    def test_default_type(self) -> Any:
        """
        Without a Content-Type (or with one that is not a media type) the
        type is application/octet-stream.
        """

        async def run() -> None:
            server = await self.start_server()
            alice = server.add_account("alice")
            for media_type in (None, b"not a type"):
                response, body = await upload(server, alice, DATA, media_type)
                self.assertEqual(response.code, 201, body)
                self.assertEqual(orjson.loads(body)["type"], "application/octet-stream")

        return ensureDeferred(run())

    def test_same_bytes(self) -> Any:
        """
        The same bytes uploaded twice get the same blobId; other bytes
        another.
        """

        async def run() -> None:
            server = await self.start_server()
            alice = server.add_account("alice")
            first = await uploaded(self, server, alice)
            second = await uploaded(self, server, alice)
            other = await uploaded(self, server, alice, DATA + b"!")
            self.assertEqual(first, second)
            self.assertNotEqual(first, other)

        return ensureDeferred(run())

    def test_empty(self) -> Any:
        """
        An empty upload is a blob of size 0 that downloads as nothing.
        """

        async def run() -> None:
            server = await self.start_server()
            alice = server.add_account("alice")
            response, body = await upload(server, alice, b"")
            self.assertEqual(response.code, 201, body)
            self.assertEqual(orjson.loads(body)["size"], 0)
            response, body = await download(server, alice, orjson.loads(body)["blobId"])
            self.assertEqual((response.code, body), (200, b""))

        return ensureDeferred(run())

    def test_max_size(self) -> Any:
        """
        An upload of exactly maxSizeUpload bytes is accepted; one byte more
        is 413 with a limit problem naming maxSizeUpload.
        """

        async def run() -> None:
            server = await self.start_server(max_size_upload=100)
            alice = server.add_account("alice")
            response, body = await upload(server, alice, b"x" * 100)
            self.assertEqual(response.code, 201, body)
            response, body = await upload(server, alice, b"x" * 101)
            problem = assert_problem(self, response, body, 413, "limit")
            self.assertEqual(problem["limit"], "maxSizeUpload")

        return ensureDeferred(run())

    def test_other_account(self) -> Any:
        """
        Uploading to another user's account is 404, answered exactly like
        an upload to an account that does not exist (nothing tells the
        accounts apart), and stores nothing.
        """

        async def run() -> None:
            server = await self.start_server()
            server.add_account("alice")
            bob = server.add_account("bob")
            response, body = await upload(server, bob, b"intruder")
            problem = assert_problem(self, response, body, 404)
            response, body = await upload(server, "Anope", b"intruder")
            missing = assert_problem(self, response, body, 404)
            self.assertEqual(problem["detail"].replace(bob, "X"), missing["detail"].replace("Anope", "X"))
            stored = [name for _, _, names in os.walk(blob_directory(server.env.config)) for name in names]
            self.assertEqual(stored, [])
            count = server.env.database.run_sync(lambda txn: txn.fetchvalue("SELECT COUNT(*) FROM blobs"))
            self.assertEqual(count, 0)

        return ensureDeferred(run())

    def test_needs_authentication(self) -> Any:
        """
        Uploads without credentials are 401.
        """

        async def run() -> None:
            server = await self.start_server()
            alice = server.add_account("alice")
            response, body = await server.request("POST", f"/jmap/upload/{alice}/", DATA, auth=None)
            assert_problem(self, response, body, 401)

        return ensureDeferred(run())


class DownloadTests(ServerTestCase):
    def test_download(self) -> Any:
        """
        A download returns the bytes with the upload's type, an attachment
        Content-Disposition with the name, the blobId as a strong ETag, and
        private caching.
        """

        async def run() -> None:
            server = await self.start_server()
            alice = server.add_account("alice")
            blob_id = await uploaded(self, server, alice)
            response, body = await download(server, alice, blob_id, "report.txt")
            self.assertEqual(response.code, 200, body)
            self.assertEqual(body, DATA)
            self.assertEqual(header(response, b"content-type"), b"text/plain")
            self.assertEqual(response.length, len(DATA))
            disposition = header(response, b"content-disposition")
            assert disposition is not None
            self.assertTrue(disposition.startswith(b"attachment;"), disposition)
            self.assertIn(b'filename="report.txt"', disposition)
            self.assertEqual(header(response, b"etag"), f'"{blob_id}"'.encode())
            cache_control = header(response, b"cache-control")
            assert cache_control is not None
            self.assertIn(b"private", [part.strip() for part in cache_control.split(b",")])

        return ensureDeferred(run())

    def test_accept(self) -> Any:
        """
        The accept parameter sets the Content-Type of the download.
        """

        async def run() -> None:
            server = await self.start_server()
            alice = server.add_account("alice")
            blob_id = await uploaded(self, server, alice)
            response, body = await download(server, alice, blob_id, accept="image/png")
            self.assertEqual(response.code, 200, body)
            self.assertEqual(header(response, b"content-type"), b"image/png")

        return ensureDeferred(run())

    def test_non_ascii_name(self) -> Any:
        """
        A name that is not ASCII is in Content-Disposition as filename*
        (UTF-8, percent-encoded; RFC 6266 and RFC 8187) with an ASCII
        fallback filename.
        """

        async def run() -> None:
            server = await self.start_server()
            alice = server.add_account("alice")
            blob_id = await uploaded(self, server, alice)
            response, body = await download(server, alice, blob_id, "Grüße €.txt")
            self.assertEqual(response.code, 200, body)
            disposition = header(response, b"content-disposition")
            assert disposition is not None
            self.assertIn(b"filename*=UTF-8''Gr%C3%BC%C3%9Fe%20%E2%82%AC.txt", disposition)
            self.assertIn(b'filename="Gr__e _.txt"', disposition)

        return ensureDeferred(run())

    def test_name_with_percent(self) -> Any:
        """
        The name is percent-decoded once: a file called "100%41.txt" (sent
        as 100%2541.txt) keeps its name.
        """

        async def run() -> None:
            server = await self.start_server()
            alice = server.add_account("alice")
            blob_id = await uploaded(self, server, alice)
            response, body = await download(server, alice, blob_id, '100%41 "q".txt')
            self.assertEqual(response.code, 200, body)
            disposition = header(response, b"content-disposition")
            assert disposition is not None
            self.assertIn(b"filename*=UTF-8''100%2541%20%22q%22.txt", disposition)
            self.assertIn(b'filename="100%41 _q_.txt"', disposition)

        return ensureDeferred(run())

    def test_if_none_match(self) -> Any:
        """
        If-None-Match with the ETag (alone, in a list, weak, or *) is 304
        without a body; with another tag it is a full 200.
        """

        async def run() -> None:
            server = await self.start_server()
            alice = server.add_account("alice")
            blob_id = await uploaded(self, server, alice)
            etag = f'"{blob_id}"'.encode()
            for value in (etag, b'"other", ' + etag, b"W/" + etag, b"*"):
                response, body = await download(server, alice, blob_id, headers={b"if-none-match": [value]})
                self.assertEqual((response.code, body), (304, b""), value)
                self.assertEqual(header(response, b"etag"), etag)
            response, body = await download(server, alice, blob_id, headers={b"if-none-match": [b'"other"']})
            self.assertEqual((response.code, body), (200, DATA))

        return ensureDeferred(run())

    def test_unknown_blob(self) -> Any:
        """
        An unknown blobId, or one that is not an Id at all, is a 404
        problem.
        """

        async def run() -> None:
            server = await self.start_server()
            alice = server.add_account("alice")
            for blob_id in ("Gnope", "G" + "0" * 64, "not*an*id"):
                response, body = await download(server, alice, blob_id)
                assert_problem(self, response, body, 404)

        return ensureDeferred(run())

    def test_isolation(self) -> Any:
        """
        Bob cannot download Alice's upload, even knowing its blobId: not
        through Alice's accountId, not through his own; both are 404, the
        same as for a blob that does not exist.
        """

        async def run() -> None:
            server = await self.start_server()
            alice = server.add_account("alice")
            bob = server.add_account("bob")
            blob_id = await uploaded(self, server, alice)
            for account_id in (alice, bob):
                response, body = await download(server, account_id, blob_id, auth="bob")
                assert_problem(self, response, body, 404)
                self.assertNotIn(DATA, body)
            response, body = await download(server, alice, blob_id)
            self.assertEqual((response.code, body), (200, DATA))

        return ensureDeferred(run())

    def test_same_bytes_each_account(self) -> Any:
        """
        When Bob uploads the same bytes himself, he may download them from
        his account (the blobId is the same), still not from Alice's.
        """

        async def run() -> None:
            server = await self.start_server()
            alice = server.add_account("alice")
            bob = server.add_account("bob")
            alice_blob = await uploaded(self, server, alice)
            bob_blob = await uploaded(self, server, bob, auth="bob")
            self.assertEqual(alice_blob, bob_blob)
            response, body = await download(server, bob, bob_blob, auth="bob")
            self.assertEqual((response.code, body), (200, DATA))
            response, body = await download(server, alice, bob_blob, auth="bob")
            assert_problem(self, response, body, 404)

        return ensureDeferred(run())

    def test_copy_to_other_user(self) -> Any:
        """
        Blob/copy from Alice's account to Bob's is accountNotFound (Bob's
        account is not shared with Alice; the accountId is the wrong one),
        and Bob still cannot download the blob.
        """

        async def run() -> None:
            server = await self.start_server()
            alice = server.add_account("alice")
            bob = server.add_account("bob")
            blob_id = await uploaded(self, server, alice)
            response = await server.api(
                [["Blob/copy", {"fromAccountId": alice, "accountId": bob, "blobIds": [blob_id]}, "c0"]]
            )
            [[name, arguments, _]] = response["methodResponses"]
            self.assertEqual((name, arguments["type"]), ("error", "accountNotFound"))
            response, body = await download(server, bob, blob_id, auth="bob")
            assert_problem(self, response, body, 404)

        return ensureDeferred(run())

    def test_client_goes_away(self) -> Any:
        """
        When the client closes the connection while the server is reading
        the blob, the download stops, the file is closed and no error is
        logged.
        """

        async def run() -> None:
            server = await self.start_server()
            alice = server.add_account("alice")
            blob_id = await uploaded(self, server, alice)
            reading: Deferred[None] = Deferred()
            closed: Deferred[None] = Deferred()
            release = threading.Event()
            self.addCleanup(release.set)
            open_blob = server.env.blobs.open

            class Watched:
                """
                The blob's file, holding the first read until released and
                telling the test when the server reads and closes it.
                """

                def __init__(self, source: Any) -> None:
                    self._source = source

                def read(self, size: int) -> bytes:
                    reactor.callFromThread(reading.callback, None)
                    release.wait(30)
                    return self._source.read(size)  # type: ignore[no-any-return]

                def close(self) -> None:
                    self._source.close()
                    closed.callback(None)

            self.patch(server.env.blobs, "open", lambda blob_id: Watched(open_blob(blob_id)))

            request = (
                f"GET /jmap/download/{alice}/{blob_id}/x HTTP/1.1\r\nHost: test\r\n".encode()
                + b"Authorization: "
                + basic("alice")
                + b"\r\n\r\n"
            )
            endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", server.service.port.getHost().port)
            client = await connectProtocol(endpoint, Protocol())
            client.transport.write(request)
            await reading
            client.transport.abortConnection()
            await closed
            release.set()

        return ensureDeferred(run())

    def test_post(self) -> Any:
        """
        The download URL only answers GET (and HEAD): POST is 405.
        """

        async def run() -> None:
            server = await self.start_server()
            alice = server.add_account("alice")
            blob_id = await uploaded(self, server, alice)
            response, body = await server.request("POST", f"/jmap/download/{alice}/{blob_id}/x", b"")
            assert_problem(self, response, body, 405)

        return ensureDeferred(run())

    def test_head(self) -> Any:
        """
        HEAD gives the download's headers without its bytes.
        """

        async def run() -> None:
            server = await self.start_server()
            alice = server.add_account("alice")
            blob_id = await uploaded(self, server, alice)
            response, body = await server.request("HEAD", f"/jmap/download/{alice}/{blob_id}/x")
            self.assertEqual((response.code, body), (200, b""))
            self.assertEqual(header(response, b"content-length"), b"%d" % len(DATA))

        return ensureDeferred(run())


class ExpiryTests(ServerTestCase):
    """
    Uploads nothing refers to are dropped after blob-temp-ttl.
    """

    def expire(self, server: Any, now: float) -> list[str]:
        """
        Run the expiry as the maintenance job does, at C{now}.
        """

        def work(txn: Any) -> list[str]:
            orphans = blob_storage.expire_blobs(txn, now)
            for blob_id in orphans:
                server.env.blobs.delete(blob_id)
            return orphans

        return server.env.database.run_sync(work, write=True)  # type: ignore[no-any-return]

    def test_expired_upload(self) -> Any:
        """
        After blob-temp-ttl the upload's row and file are gone and the
        download is 404; before it, nothing is dropped.
        """

        async def run() -> None:
            server = await self.start_server(blob_temp_ttl=3600.0)
            alice = server.add_account("alice")
            blob_id = await uploaded(self, server, alice)
            now = float(server.env.clock.seconds())
            self.assertEqual(self.expire(server, now + 3000), [])
            self.assertTrue(server.env.blobs.exists(blob_id))
            self.assertEqual(self.expire(server, now + 3601), [blob_id])
            self.assertIsNone(server.env.database.run_sync(blob_storage.get_blob, alice, blob_id))
            self.assertFalse(server.env.blobs.exists(blob_id))
            response, body = await download(server, alice, blob_id)
            assert_problem(self, response, body, 404)

        return ensureDeferred(run())

    def test_kept_blob(self) -> Any:
        """
        A blob made permanent (something refers to it) survives the expiry.
        """

        async def run() -> None:
            server = await self.start_server(blob_temp_ttl=3600.0)
            alice = server.add_account("alice")
            blob_id = await uploaded(self, server, alice)
            server.env.database.run_sync(blob_storage.keep_blob, alice, blob_id, write=True)
            self.assertEqual(self.expire(server, float(server.env.clock.seconds()) + 10**6), [])
            response, body = await download(server, alice, blob_id)
            self.assertEqual((response.code, body), (200, DATA))

        return ensureDeferred(run())

    def test_shared_file_kept(self) -> Any:
        """
        When Alice's upload expires but Bob has a permanent row for the same
        bytes, the file stays and Bob can still download it; Alice cannot.
        """

        async def run() -> None:
            server = await self.start_server(blob_temp_ttl=3600.0)
            alice = server.add_account("alice")
            bob = server.add_account("bob")
            blob_id = await uploaded(self, server, alice)
            await uploaded(self, server, bob, auth="bob")
            server.env.database.run_sync(blob_storage.keep_blob, bob, blob_id, write=True)
            self.assertEqual(self.expire(server, float(server.env.clock.seconds()) + 10**6), [])
            self.assertTrue(server.env.blobs.exists(blob_id))
            response, body = await download(server, bob, blob_id, auth="bob")
            self.assertEqual((response.code, body), (200, DATA))
            response, body = await download(server, alice, blob_id)
            assert_problem(self, response, body, 404)

        return ensureDeferred(run())

    def test_maintenance(self) -> Any:
        """
        The service's maintenance job drops expired uploads and their files
        (blob-temp-ttl 0: an upload is expired as soon as it is made) and
        keeps permanent ones.
        """

        async def run() -> None:
            server = await self.start_server(blob_temp_ttl=0)
            alice = server.add_account("alice")
            temporary = await uploaded(self, server, alice)
            kept = await uploaded(self, server, alice, DATA + b"kept")
            server.env.database.run_sync(blob_storage.keep_blob, alice, kept, write=True)
            await server.service.maintain()
            self.assertFalse(server.env.blobs.exists(temporary))
            response, body = await download(server, alice, temporary)
            assert_problem(self, response, body, 404)
            response, body = await download(server, alice, kept)
            self.assertEqual((response.code, body), (200, DATA + b"kept"))

        return ensureDeferred(run())

    def test_upload_again(self) -> Any:
        """
        Uploading bytes whose earlier upload expired stores them again.
        """

        async def run() -> None:
            server = await self.start_server(blob_temp_ttl=3600.0)
            alice = server.add_account("alice")
            blob_id = await uploaded(self, server, alice)
            self.expire(server, float(server.env.clock.seconds()) + 10**6)
            self.assertEqual(await uploaded(self, server, alice), blob_id)
            response, body = await download(server, alice, blob_id)
            self.assertEqual((response.code, body), (200, DATA))

        return ensureDeferred(run())


# The same tests on PostgreSQL (see tests/pg.py).
pg.add_postgresql_variants(globals(), DownloadTests, ExpiryTests, UploadTests)
