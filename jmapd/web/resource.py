# -*- test-case-name: tests.web.test_api -*-
"""
Helpers shared by the resources: JSON and problem responses written in
one piece, asynchronous rendering with one place that turns failures into
answers, and the client address.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

import orjson
from twisted.internet.defer import CancelledError, Deferred, ensureDeferred
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET

log = Logger()

JSON = b"application/json"
PROBLEM_JSON = b"application/problem+json"


class HTTPProblem(Exception):
    """
    An HTTP answer other than success, as an RFC 7807 problem document.
    """

    def __init__(
        self,
        status: int,
        detail: str,
        type: str = "about:blank",
        headers: dict[bytes, bytes] | None = None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.type = type
        self.headers = headers or {}
        self.extra = extra or {}

    def body(self) -> dict[str, Any]:
        body: dict[str, Any] = {"type": self.type, "status": self.status, "detail": self.detail}
        body.update(self.extra)
        return body


def write_body(request: Any, status: int, content_type: bytes, body: bytes) -> None:
    """
    Finish C{request} with C{body}, sized up front, unless the client is
    gone already.
    """
    if request.finished or getattr(request, "_disconnected", False):
        return
    request.setResponseCode(status)
    request.setHeader(b"content-type", content_type)
    request.setHeader(b"content-length", b"%d" % len(body))
    request.setHeader(b"cache-control", b"no-cache, no-store, must-revalidate")
    if request.method != b"HEAD":
        request.write(body)
    request.finish()


def write_json(request: Any, value: Any, status: int = 200) -> None:
    write_body(request, status, JSON, orjson.dumps(value))


def write_problem(request: Any, problem: HTTPProblem) -> None:
    for name, value in problem.headers.items():
        request.setHeader(name, value)
    write_body(request, problem.status, PROBLEM_JSON, orjson.dumps(problem.body()))


class AsyncResource(Resource):
    """
    A leaf resource whose handlers are coroutines: C{async def
    handle_POST(request)} and so on.  Whatever a handler raises becomes an
    answer here: an L{HTTPProblem} as itself, anything else as a 500 with an
    error id (the traceback goes to the log, never to the client).
    """

    isLeaf = True

    #: Whether the path may go on below this resource (upload and download
    #: take their arguments from it); otherwise anything below is a 404.
    takes_path = False

    def render(self, request: Any) -> Any:
        if not self.takes_path and any(request.postpath):
            write_problem(request, HTTPProblem(404, "no such resource"))
            return NOT_DONE_YET
        method = request.method.decode("ascii", "replace")
        if method == "HEAD":
            method = "GET"
        handler: Callable[[Any], Coroutine[Any, Any, None]] | None = getattr(self, f"handle_{method}", None)
        if handler is None:
            allowed = sorted(name[len("handle_"):] for name in dir(self) if name.startswith("handle_"))
            write_problem(
                request,
                HTTPProblem(
                    405,
                    f"{method} is not allowed here",
                    headers={b"allow": ", ".join(allowed).encode("ascii")},
                ),
            )
            return NOT_DONE_YET
        d: Deferred[None] = ensureDeferred(handler(request))
        d.addErrback(self._failed, request)
        request.notifyFinish().addErrback(lambda _: d.cancel())
        return NOT_DONE_YET

    def _failed(self, failure: Failure, request: Any) -> None:
        if failure.check(CancelledError):
            return
        if isinstance(failure.value, HTTPProblem):
            write_problem(request, failure.value)
            return
        from jmapd.storage.ids import new_id

        error_id = new_id("e", 10)
        log.failure("request failed, error id {error_id}", failure, error_id=error_id)
        write_problem(request, HTTPProblem(500, f"internal error {error_id}; see the server log"))


def client_address(request: Any, use_forwarded_header: bool) -> str:
    """
    The address of the client: the peer, or with C{use-forwarded-header}
    the first address a trusted proxy recorded in C{Forwarded} or
    C{X-Forwarded-For}.
    """
    if use_forwarded_header:
        forwarded = (request.getHeader(b"forwarded") or b"").decode("latin-1")
        if forwarded:
            for part in forwarded.split(",")[0].split(";"):
                name, _, value = part.strip().partition("=")
                if name.lower() == "for" and value:
                    return value.strip('"').strip("[]")
        forwarded_for = (request.getHeader(b"x-forwarded-for") or b"").decode("latin-1")
        if forwarded_for:
            return forwarded_for.split(",")[0].strip()
    peer = request.getClientAddress()
    return getattr(peer, "host", "") or str(peer)


def body_size(request: Any) -> int:
    """
    The size of the request body in octets, also when it was too large to
    keep (see L{jmapd.web.root.JMAPRequest}).
    """
    dropped = getattr(request, "dropped_body_size", None)
    if dropped is not None:
        return int(dropped)
    request.content.seek(0, 2)
    size = int(request.content.tell())
    request.content.seek(0)
    return size
