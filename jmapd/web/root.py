# -*- test-case-name: tests.web.test_api -*-
"""
The resource tree:

    /.well-known/jmap            Session
    /jmap/                       API (POST)
    /jmap/upload/{accountId}/    upload
    /jmap/download/{accountId}/{blobId}/{name}
    /jmap/eventsource/, /jmap/ws (when push is enabled)
    /health                      for load balancers (no credentials)

wrapped in the CORS resource, and a Site that sets TCP_NODELAY on every
connection (see DESIGN.md: a keep-alive response larger than one packet
otherwise waits 40 ms for a delayed ACK).
"""

from __future__ import annotations

from typing import Any

from twisted.web.resource import NoResource, Resource
from twisted.web.server import Request, Site

from jmapd.web.api import APIResource
from jmapd.web.blobs import DownloadResource, UploadResource
from jmapd.web.cors import CORSPolicy, CORSResource
from jmapd.web.health import HealthResource
from jmapd.web.resource import HTTPProblem, write_problem
from jmapd.web.session import SessionResource


class _NotFound(Resource):
    isLeaf = True

    def render(self, request: Any) -> Any:
        from twisted.web.server import NOT_DONE_YET

        write_problem(request, HTTPProblem(404, "no such resource"))
        return NOT_DONE_YET


class JMAPResource(Resource):
    """
    C{/jmap}: the API itself (at C{/jmap/} and C{/jmap}) and the binary
    data and push endpoints below it.
    """

    def __init__(self, api: Resource, children: dict[bytes, Resource]) -> None:
        super().__init__()
        self._api = api
        for name, child in children.items():
            self.putChild(name, child)

    def getChild(self, name: bytes, request: Any) -> Resource:
        if name == b"":
            return self._api
        return _NotFound()

    def render(self, request: Any) -> Any:
        return self._api.render(request)


class _Directory(Resource):
    """
    An inner node of the tree (the root, C{/.well-known}): its children,
    and a 404 problem for itself and any other name.
    """

    def getChild(self, name: bytes, request: Any) -> Resource:
        return _NotFound()

    def render(self, request: Any) -> Any:
        return _NotFound().render(request)


def build_root(env: Any, authenticator: Any, extra: dict[bytes, Resource] | None = None) -> Resource:
    """
    The whole resource tree for one service, CORS wrapper included.

    @param extra: more children of C{/jmap/} (eventsource, ws).
    """
    root = _Directory()
    well_known = _Directory()
    well_known.putChild(b"jmap", SessionResource(env, authenticator))
    root.putChild(b".well-known", well_known)
    root.putChild(b"health", HealthResource(env))
    children: dict[bytes, Resource] = {
        b"upload": UploadResource(env, authenticator),
        b"download": DownloadResource(env, authenticator),
    }
    children.update(extra or {})
    root.putChild(b"jmap", JMAPResource(APIResource(env, authenticator), children))
    config = env.config
    return CORSResource(root, CORSPolicy(config.strict_cors, config.cors_allowed_origins))


class JMAPRequest(Request):
    """
    A request that keeps at most C{max_body} octets of body.

    twisted.web normally stores the whole body (in a temporary file above
    100 KB) before any resource sees the request, so a client, even one
    without credentials, could fill the disk.  Beyond the limit the body is
    counted and dropped; the resource then answers with the size limit it
    exceeded (maxSizeRequest or maxSizeUpload).
    """

    max_body = 0
    dropped_body_size: int | None = None

    def gotLength(self, length: int | None) -> None:
        self._received = 0
        if length is not None and self.max_body and length > self.max_body:
            self.dropped_body_size = length
            length = 0
        super().gotLength(length)

    def handleContentChunk(self, data: bytes) -> None:
        self._received = getattr(self, "_received", 0) + len(data)
        if self.dropped_body_size is not None:
            self.dropped_body_size = max(self.dropped_body_size, self._received)
            return
        if self.max_body and self._received > self.max_body:
            self.dropped_body_size = self._received
            if self.content is not None:
                self.content.seek(0)
                self.content.truncate()
            return
        super().handleContentChunk(data)


class JMAPSite(Site):
    """
    A L{Site} that turns on TCP_NODELAY for every connection, keeps request
    bodies within the configured limits and does not log requests itself
    (the API logs one line per request).
    """

    def __init__(self, resource: Resource, max_body: int = 0, **kwargs: Any) -> None:
        # JMAP has no HTML forms: a POST body is never parsed into
        # request.args.  twisted.web would otherwise parse every POST's
        # Content-Type with the stdlib email package (about a fifth of a
        # millisecond per API call) only to find it is not form data.
        kwargs.setdefault("parsePOSTFormSubmission", False)
        super().__init__(resource, **kwargs)

        class _Request(JMAPRequest):
            pass

        _Request.max_body = max_body
        self.requestFactory = _Request

    def buildProtocol(self, addr: Any) -> Any:
        protocol = super().buildProtocol(addr)
        make_connection = protocol.makeConnection

        def makeConnection(transport: Any) -> None:
            set_no_delay = getattr(transport, "setTcpNoDelay", None)
            if set_no_delay is not None:
                try:
                    set_no_delay(True)
                except OSError:
                    pass
            make_connection(transport)

        protocol.makeConnection = makeConnection
        return protocol

    def log(self, request: Any) -> None:
        pass

    def getResourceFor(self, request: Any) -> Any:
        resource = super().getResourceFor(request)
        if isinstance(resource, NoResource):
            return _NotFound()
        return resource
