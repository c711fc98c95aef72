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

import io
import re
from collections import Counter
from typing import Any
from urllib.parse import quote

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IPushProducer
from twisted.logger import Logger
from zope.interface import implementer

from jmapd.protocol.arguments import is_id
from jmapd.protocol.engine import CORE
from jmapd.protocol.errors import MethodError
from jmapd.storage import blobs as blob_storage
from jmapd.web.auth import run_checked
from jmapd.web.resource import AsyncResource, HTTPProblem, body_size, write_json

log = Logger()

_CHUNK = 256 * 1024
_MEDIA_TYPE = re.compile(r"^[A-Za-z0-9!#$&^_.+-]+/[A-Za-z0-9!#$&^_.+-]+(\s*;.*)?$")
DEFAULT_TYPE = "application/octet-stream"


def _account_check(env: Any, txn: Any, login: Any, account_id: str) -> Any:
    """
    The method Context of the login for C{account_id}, which it must be
    allowed to use.
    """
    from jmapd.protocol.engine import Context

    ctx = Context(txn, env, login.principal, frozenset(), {})
    try:
        ctx.account(account_id, CORE)
    except MethodError:
        raise HTTPProblem(404, f"no account {account_id!r}") from None
    return ctx


def content_disposition(name: str) -> bytes:
    """
    C{attachment} with the file name in both forms of RFC 6266: an ASCII
    fallback and the exact name as C{filename*} (RFC 8187).
    """
    fallback = "".join(c if 32 <= ord(c) < 127 and c not in '"\\' else "_" for c in name) or "download"
    encoded = quote(name, safe="!#$&+-.^_`|~")
    return f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{encoded}".encode("ascii")


def _matches(if_none_match: bytes | None, etag: bytes) -> bool:
    """
    Whether an C{If-None-Match} header (a list of entity tags, weak or
    strong, or C{*}; RFC 9110 section 13.1.2) names C{etag}.
    """
    if not if_none_match:
        return False
    for candidate in if_none_match.split(b","):
        candidate = candidate.strip()
        if candidate.startswith(b"W/"):
            candidate = candidate[2:]
        if candidate in (etag, b"*"):
            return True
    return False


class UploadResource(AsyncResource):
    """
    POST /jmap/upload/{accountId}/
    """

    takes_path = True

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
        size = body_size(request)
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
            record = await run_checked(
                self._auth, env.database, request, login, self._store,
                account_id, request.content, size, media_type, write=True,
            )
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
        if account_id != login.principal.account_id:
            # An upload to an account shared with the user: theirs to use
            # there (Email/import into a shared Mailbox), no one else's.
            blob_storage.grant_blob(txn, account_id, blob_id, login.principal.account_id)
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

    takes_path = True

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
        # Twisted has percent-decoded each segment already: decoding the
        # name again would turn a file called "100%41" into "100A".
        name = "/".join(parts[2:])
        accept = request.args.get(b"accept", [b""])[0].decode("utf-8", "replace").strip()

        def find(txn: Any, login: Any) -> Any:
            ctx = _account_check(env, txn, login, account_id)
            if not is_id(blob_id) or not env.registry.may_read_blob(ctx, account_id, blob_id):
                # Someone else's account: only blobs of Emails the user
                # may read, and no word of the others.
                raise HTTPProblem(404, f"no blob {blob_id!r} in account {account_id!r}")
            record = blob_storage.get_blob(txn, account_id, blob_id) if is_id(blob_id) else None
            if record is not None and env.blobs.exists(blob_id):
                return record, env.blobs.open(blob_id)
            data = env.registry.resolve_blob(env, txn, account_id, blob_id) if is_id(blob_id) else None
            if data is None:
                raise HTTPProblem(404, f"no blob {blob_id!r} in account {account_id!r}")
            derived = blob_storage.BlobRecord(account_id, blob_id, len(data), DEFAULT_TYPE, None)
            return derived, io.BytesIO(data)

        record, source = await run_checked(self._auth, env.database, request, login, find)
        try:
            etag = f'"{blob_id}"'.encode("ascii")
            request.setHeader(b"etag", etag)
            request.setHeader(b"cache-control", b"private, immutable, max-age=31536000")
            if _matches(request.getHeader(b"if-none-match"), etag):
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
            # Count down the recorded size rather than read to the end: the
            # client may close the connection as soon as it has the last
            # byte, and the response must be finished by then.
            remaining = record.size
            try:
                while remaining > 0 and not pacer.stopped:
                    chunk = await env.workers.run(source.read, min(_CHUNK, remaining))
                    if not chunk:
                        break
                    remaining -= len(chunk)
                    request.write(chunk)
                    await pacer.wait()
            finally:
                # A client that went away took the channel with it (and
                # this coroutine may be being cancelled).
                if request.channel is not None:
                    request.unregisterProducer()
            if pacer.stopped or request.channel is None:
                return
            if remaining > 0:
                log.error(
                    "blob {blob_id} is {missing} bytes shorter than recorded; download aborted",
                    blob_id=blob_id,
                    missing=remaining,
                )
                request.loseConnection()
                return
            request.finish()
        finally:
            source.close()
