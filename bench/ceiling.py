# -*- test-case-name: tests.bench.test_ceiling -*-
"""
The ceiling: the smallest twisted.web server that answers the core_echo
workload correctly, so that jmapd's Core/echo can be reported as a
fraction of what Twisted itself can do on this machine in the same run.

It serves a minimal Session (so the suite discovers it like any target)
and POST /jmap/: check the Authorization header against the one expected
value, parse the body with orjson, answer every Core/echo call with its
arguments, write the answer sized up front in one piece.  With
C{--thread} the parse-and-answer step runs in a thread pool via
C{deferToThreadPool}, the one hop jmapd makes for its transaction, so the
cost of that hop is visible on its own.

Like jmapd's site it turns on TCP_NODELAY and logs nothing per request.

    python -m bench.ceiling --port 8099 [--thread] [--user U --password P]
"""

from __future__ import annotations

import argparse
import base64
import sys
from typing import Any

import orjson
from twisted.internet.threads import deferToThreadPool
from twisted.python.threadpool import ThreadPool
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Site

__all__ = ["build_site", "echo"]

CORE = "urn:ietf:params:jmap:core"
SESSION_STATE = "ceiling"


def echo(body: bytes) -> tuple[int, bytes]:
    """
    Answer one JMAP request that uses only Core/echo: (status, body).
    """
    try:
        request = orjson.loads(body)
        calls = request["methodCalls"]
        responses = []
        for name, arguments, call_id in calls:
            if name == "Core/echo":
                responses.append(["Core/echo", arguments, call_id])
            else:
                responses.append(["error", {"type": "unknownMethod"}, call_id])
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
        return 400, orjson.dumps({"type": "urn:ietf:params:jmap:error:notRequest", "status": 400})
    return 200, orjson.dumps({"methodResponses": responses, "sessionState": SESSION_STATE})


def _finish(request: Any, answer: tuple[int, bytes]) -> None:
    status, body = answer
    request.setResponseCode(status)
    request.setHeader(b"content-type", b"application/json")
    request.setHeader(b"content-length", b"%d" % len(body))
    request.write(body)
    request.finish()


class _API(Resource):
    isLeaf = True

    def __init__(self, authorization: bytes, reactor: Any, pool: ThreadPool | None) -> None:
        super().__init__()
        self._authorization = authorization
        self._reactor = reactor
        self._pool = pool

    def render_POST(self, request: Any) -> Any:
        if request.getHeader(b"authorization") != self._authorization:
            request.setResponseCode(401)
            request.setHeader(b"www-authenticate", b'Basic realm="ceiling"')
            return b""
        body = request.content.read()
        if self._pool is None:
            _finish(request, echo(body))
            return NOT_DONE_YET
        d = deferToThreadPool(self._reactor, self._pool, echo, body)
        d.addCallback(lambda answer: _finish(request, answer))
        return NOT_DONE_YET


class _Session(Resource):
    isLeaf = True

    def __init__(self, authorization: bytes, user: str) -> None:
        super().__init__()
        self._authorization = authorization
        self._body = orjson.dumps({
            "capabilities": {CORE: {"maxConcurrentRequests": 1024, "maxCallsInRequest": 16,
                                    "maxSizeRequest": 10_000_000, "maxSizeUpload": 0,
                                    "maxConcurrentUpload": 1, "maxObjectsInGet": 500,
                                    "maxObjectsInSet": 500, "collationAlgorithms": []}},
            "accounts": {"a": {"name": user, "isPersonal": True, "isReadOnly": True,
                               "accountCapabilities": {}}},
            "primaryAccounts": {},
            "username": user,
            "apiUrl": "/jmap/",
            "downloadUrl": "/jmap/download/{accountId}/{blobId}/{name}?accept={type}",
            "uploadUrl": "/jmap/upload/{accountId}/",
            "eventSourceUrl": "/jmap/eventsource/?types={types}&closeafter={closeafter}&ping={ping}",
            "state": SESSION_STATE,
        })

    def render_GET(self, request: Any) -> bytes:
        if request.getHeader(b"authorization") != self._authorization:
            request.setResponseCode(401)
            return b""
        request.setHeader(b"content-type", b"application/json")
        return self._body


class _NoDelaySite(Site):
    def buildProtocol(self, addr: Any) -> Any:
        protocol = super().buildProtocol(addr)
        make_connection = protocol.makeConnection

        def makeConnection(transport: Any) -> None:
            transport.setTcpNoDelay(True)
            make_connection(transport)

        protocol.makeConnection = makeConnection
        return protocol

    def log(self, request: Any) -> None:
        pass


def build_site(reactor: Any, user: str, password: str, pool: ThreadPool | None) -> Site:
    authorization = b"Basic " + base64.b64encode(f"{user}:{password}".encode())
    root = Resource()
    well_known = Resource()
    well_known.putChild(b"jmap", _Session(authorization, user))
    root.putChild(b".well-known", well_known)
    api = _API(authorization, reactor, pool)
    jmap = Resource()
    jmap.putChild(b"", api)
    root.putChild(b"jmap", jmap)
    return _NoDelaySite(root)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.ceiling", description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--user", default="bench")
    parser.add_argument("--password", default="ceiling")
    parser.add_argument("--thread", action="store_true", help="answer in a thread pool (deferToThreadPool)")
    parser.add_argument("--threads", type=int, default=2, help="size of that pool")
    args = parser.parse_args(argv)

    from twisted.internet import reactor

    pool = None
    if args.thread:
        pool = ThreadPool(minthreads=args.threads, maxthreads=args.threads, name="ceiling")
        pool.start()
        reactor.addSystemEventTrigger("during", "shutdown", pool.stop)
    reactor.listenTCP(args.port, build_site(reactor, args.user, args.password, pool),  # type: ignore[arg-type]
                      interface="127.0.0.1")
    reactor.run()


if __name__ == "__main__":
    main(sys.argv[1:])
