# -*- test-case-name: tests.web.test_blobs -*-
"""
Upload and download of binary data (RFC 8620 section 6).

Uploads are written to the content-addressed blob store (fsynced) in a
worker thread and recorded as the uploader's, with an expiry of
C{blob-temp-ttl} until something references them.  Downloads stream the
file from worker-thread reads, one chunk at a time, pausing while the
client is slow.
"""

from __future__ import annotations

import re
from collections import Counter
from typing import Any
from urllib.parse import quote

from twisted.internet.defer import Deferred
from twisted.logger import Logger
from zope.interface import implementer
from twisted.internet.interfaces import IPushProducer

from jmapd.protocol.arguments import is_id
from jmapd.protocol.engine import CORE
from jmapd.protocol.errors import MethodError
from jmapd.storage import blobs as blob_storage
from jmapd.web.auth import AuthVersionChanged, check_auth_version, unauthorized
from jmapd.web.resource import AsyncResource, HTTPProblem, write_json

log = Logger()

_CHUNK = 256 * 1024
_MEDIA_TYPE = re.compile(r"^[A-Za-z0-9!#$&^_.+-]+/[A-Za-z0-9!#$&^_.+-]+(\s*;.*)?$")
DEFAULT_TYPE = "application/octet-stream"


def _account_check(env: Any, txn: Any, login: Any, account_id: str) -> None:
    from jmapd.protocol.engine import Context

    check_auth_version(txn, login)
    ctx = Context(txn, env, login.principal, frozenset(), {})
    try:
        ctx.account(account_id, CORE)
    except MethodError:
        raise HTTPProblem(404, f"no account {account_id!r}") from None


def content_disposition(name: str) -> bytes:
    """
    C{attachment} with the file name in both forms of RFC 6266: an ASCII
    fallback and the exact name as C{filename*} (RFC 8187).
    """
    fallback = "".join(c if 32 <= ord(c) < 127 and c not in '"\\' else "_" for c in name) or "download"
    encoded = quote(name, safe="!#$&+-.^_`|~")
    return f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{encoded}".encode("ascii")


class UploadResource(AsyncResource):
    """
    POST /jmap/upload/{accountId}/
    """

    def __init__(self, env: Any, authenticator: Any) -> None:
        super().__init__()
        self._env = env
        self._auth = authenticator
        self._inflight: Counter[str] = Counter()

    async def handle_POST(self, request: Any) -> None:
        login = await self._auth.authenticate(request)
        env = self._env
        config = env.config
        if len(request.postpath) < 1 or not is_id(request.postpath[0].decode("utf-8", "replace")):
            raise HTTPProblem(404, "the upload URL is /jmap/upload/{accountId}/")
        account_id = request.postpath[0].decode("utf-8")
        request.content.seek(0, 2)
        size = request.content.tell()
        request.content.seek(0)
        if size > config.max_size_upload:
            raise HTTPProblem(
                413,
                f"the upload is {size} bytes; maxSizeUpload is {config.max_size_upload}",
                type="urn:ietf:params:jmap:error:limit",
                extra={"limit": "maxSizeUpload"},
            )
        user = login.principal.account_id
        if self._inflight[user] >= config.max_concurrent_uploads:
            raise HTTPProblem(
                429,
                f"at most {config.max_concurrent_uploads} uploads may run at once",
                type="urn:ietf:params:jmap:error:limit",
                extra={"limit": "maxConcurrentUpload"},
            )
        media_type = (request.getHeader(b"content-type") or b"").decode("latin-1").strip() or DEFAULT_TYPE
        if not _MEDIA_TYPE.match(media_type):
            media_type = DEFAULT_TYPE
        self._inflight[user] += 1
        try:
            record = await env.database.run_interaction(
                self._store, login, account_id, request.content, size, media_type, write=True
            )
        except AuthVersionChanged:
            self._auth.revalidate(request, login)
            raise unauthorized("the credentials changed; authenticate again") from None
        finally:
            self._inflight[user] -= 1
            if self._inflight[user] <= 0:
                del self._inflight[user]
        request.setResponseCode(201)
        write_json(
            request,
            {"accountId": account_id, "blobId": record.blob_id, "type": record.type, "size": record.size},
            status=201,
        )

    def _store(self, txn: Any, login: Any, account_id: str, content: Any, size: int, media_type: str) -> Any:
        env = self._env
        _account_check(env, txn, login, account_id)
        content.seek(0)
        blob_id = env.blobs.put_file(content)
        now = float(env.clock.seconds())
        record = blob_storage.add_blob(
            txn, account_id, blob_id, size, media_type, now, now + env.config.blob_temp_ttl
        )
        if not env.blobs.exists(blob_id):
            # The expiry removed the file between our write and our row.
            content.seek(0)
            env.blobs.put_file(content)
        return blob_storage.BlobRecord(account_id, blob_id, size, media_type, record.expires_at)


@implementer(IPushProducer)
class _Pacer:
    """
    Pause the download loop while the transport's buffer is full.
    """

    def __init__(self) -> None:
        self._waiting: Deferred[None] | None = None
        self.paused = False
        self.stopped = False

    def pauseProducing(self) -> None:
        self.paused = True

    def resumeProducing(self) -> None:
        self.paused = False
        waiting, self._waiting = self._waiting, None
        if waiting is not None:
            waiting.callback(None)

    def stopProducing(self) -> None:
        self.stopped = True
        self.resumeProducing()

    def wait(self) -> Deferred[None]:
        if not self.paused:
            from twisted.internet.defer import succeed

            return succeed(None)
        self._waiting = Deferred()
        return self._waiting


class DownloadResource(AsyncResource):
    """
    GET /jmap/download/{accountId}/{blobId}/{name}?accept={type}
    """

    def __init__(self, env: Any, authenticator: Any) -> None:
        super().__init__()
        self._env = env
        self._auth = authenticator

    async def handle_GET(self, request: Any) -> None:
        login = await self._auth.authenticate(request)
        env = self._env
        parts = [p.decode("utf-8", "replace") for p in request.postpath]
        if len(parts) < 3 or not parts[0] or not parts[1]:
            raise HTTPProblem(404, "the download URL is /jmap/download/{accountId}/{blobId}/{name}")
        account_id, blob_id = parts[0], parts[1]
        name = "/".join(parts[2:])
        from urllib.parse import unquote

        name = unquote(name)
        accept = request.args.get(b"accept", [b""])[0].decode("utf-8", "replace").strip()

        def find(txn: Any) -> Any:
            _account_check(env, txn, login, account_id)
            record = blob_storage.get_blob(txn, account_id, blob_id) if is_id(blob_id) else None
            if record is None or not env.blobs.exists(blob_id):
                raise HTTPProblem(404, f"no blob {blob_id!r} in account {account_id!r}")
            return record, env.blobs.open(blob_id)

        try:
            record, source = await env.database.run_interaction(find)
        except AuthVersionChanged:
            self._auth.revalidate(request, login)
            raise unauthorized("the credentials changed; authenticate again") from None
        try:
            etag = f'"{blob_id}"'.encode("ascii")
            request.setHeader(b"etag", etag)
            request.setHeader(b"cache-control", b"private, immutable, max-age=31536000")
            if request.getHeader(b"if-none-match") in (etag, b"*"):
                request.setResponseCode(304)
                request.finish()
                return
            media_type = accept if accept and _MEDIA_TYPE.match(accept) else record.type
            request.setHeader(b"content-type", media_type.encode("latin-1", "replace"))
            request.setHeader(b"content-disposition", content_disposition(name))
            request.setHeader(b"content-length", b"%d" % record.size)
            request.setHeader(b"x-content-type-options", b"nosniff")
            if request.method == b"HEAD":
                request.finish()
                return
            pacer = _Pacer()
            request.registerProducer(pacer, True)
            try:
                while not pacer.stopped:
                    chunk = await env.workers.run(source.read, _CHUNK)
                    if not chunk or pacer.stopped:
                        break
                    request.write(chunk)
                    await pacer.wait()
            finally:
                request.unregisterProducer()
            if not pacer.stopped:
                request.finish()
        finally:
            source.close()
