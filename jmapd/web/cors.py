# -*- test-case-name: tests.web.test_cors -*-
"""
Cross-origin resource sharing around the whole resource tree, so browser
clients on another origin can use the API.

Permissive by default: any Origin is echoed back.  With C{strict-cors} only
the origins in C{cors-allowed-origins} get CORS headers; browsers then refuse
other origins' scripts the responses.  Preflight C{OPTIONS} requests are
answered here, on every path, without authentication (browsers never send
credentials with a preflight).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from twisted.web.resource import Resource

ALLOW_METHODS = b"GET, POST, OPTIONS"
ALLOW_HEADERS = b"Authorization, Content-Type, Accept, Last-Event-ID"
EXPOSE_HEADERS = b"ETag, Content-Disposition, Content-Length, Retry-After, WWW-Authenticate, Location"
MAX_AGE = b"86400"


class CORSPolicy:
    """
    Which origins get CORS headers.
    """

    def __init__(self, strict: bool, allowed_origins: Iterable[str]) -> None:
        self.strict = strict
        self.allowed = frozenset(origin.lower() for origin in allowed_origins)

    def allows(self, origin: bytes) -> bool:
        if not self.strict:
            return True
        return origin.decode("latin-1").lower() in self.allowed


class _Preflight(Resource):
    isLeaf = True

    def render_OPTIONS(self, request: Any) -> bytes:
        request.setResponseCode(204)
        request.setHeader(b"content-length", b"0")
        return b""


class CORSResource(Resource):
    """
    Add CORS headers to every response of C{wrapped} (the shape of
    L{twisted.web.tap._AddHeadersResource}) and answer preflights.
    """

    def __init__(self, wrapped: Resource, policy: CORSPolicy) -> None:
        super().__init__()
        self._wrapped = wrapped
        self._policy = policy

    def _decorate(self, request: Any) -> None:
        origin = request.getHeader(b"origin")
        request.responseHeaders.addRawHeader(b"vary", b"Origin")
        if origin is None:
            return
        raw = origin.encode("latin-1") if isinstance(origin, str) else origin
        if not self._policy.allows(raw):
            return
        headers = request.responseHeaders
        headers.setRawHeaders(b"access-control-allow-origin", [raw])
        headers.setRawHeaders(b"access-control-expose-headers", [EXPOSE_HEADERS])
        if request.method == b"OPTIONS":
            headers.setRawHeaders(b"access-control-allow-methods", [ALLOW_METHODS])
            headers.setRawHeaders(b"access-control-allow-headers", [ALLOW_HEADERS])
            headers.setRawHeaders(b"access-control-max-age", [MAX_AGE])

    def getChildWithDefault(self, name: bytes, request: Any) -> Resource:
        self._decorate(request)
        if request.method == b"OPTIONS":
            return _Preflight()
        return self._wrapped.getChildWithDefault(name, request)

    def render(self, request: Any) -> Any:
        self._decorate(request)
        if request.method == b"OPTIONS":
            return _Preflight().render(request)
        return self._wrapped.render(request)
