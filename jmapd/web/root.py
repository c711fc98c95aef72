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
otherwise waits 40 ms for a delayed ACK) and gives a client a deadline for
sending each request (L{JMAPChannel}).
"""

from __future__ import annotations

import functools
from typing import Any

import orjson
from twisted.internet.interfaces import IDelayedCall
from twisted.internet.protocol import connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.http import HTTPChannel
from twisted.web.resource import NoResource, Resource
from twisted.web.server import Request, Site

from jmapd.web.api import APIResource
from jmapd.web.blobs import DownloadResource, UploadResource
from jmapd.web.cors import CORSPolicy, CORSResource
from jmapd.web.health import HealthResource
from jmapd.web.resource import PROBLEM_JSON, HTTPProblem, write_problem
from jmapd.web.session import SessionResource

log = Logger()


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


#: How many octets of a request body give it C{http-request-timeout}
#: seconds more (L{JMAPChannel}).
BODY_PROGRESS = 64 * 1024


class JMAPChannel(HTTPChannel):
    """
    An HTTP/1.1 channel that gives the client C{request_timeout} seconds to
    send a request's header, from the request's first byte, and as long
    again for each L{BODY_PROGRESS} octets of its body (a large upload over
    a slow link goes on as long as it keeps coming at that rate, about 2
    KiB/s by default; a body trickling in slower does not); a client slower
    than that gets 408 and the connection is closed.

    Twisted's only limit is the idle timeout, which every byte received
    restarts: a client sending its request a byte a minute (slowloris)
    would hold the connection, and a request slot, for ever.  The deadline
    runs on the site's reactor (C{callLater}, set from the site like the
    idle timeout's), so tests drive it with a fake clock.

    It covers receiving a request only.  Between requests the connection
    is idle and the idle timeout governs it; while a request is handled
    (a long EventSource response included) Twisted parses nothing, so no
    deadline starts; and a WebSocket upgrade hands the transport to another
    protocol, so this one sees no more bytes.

    @ivar request_timeout: the seconds for the header, and for the body;
        0 means no deadline.
    """

    request_timeout: float = 0
    _request_deadline: IDelayedCall | None = None
    # Body octets received since the body's deadline last started.
    _body_progress = 0
    # Set once the connection was answered and is closing (408, 414,
    # 431): what the client sends then must not make a request after all.
    _closing = False
    # Between a request's last byte and its response's end (Twisted
    # parses nothing meanwhile, and keeps what comes for later).
    _handling = False

    def dataReceived(self, data: bytes) -> None:
        if self._closing:
            return
        # A byte while no request is being received or handled is the
        # first of the next request (pipelined bytes kept while a request
        # was handled come back through here when it is done).
        if data and self._request_deadline is None and not self._handling:
            self._start_deadline("header")
        super().dataReceived(data)

    def allHeadersReceived(self) -> None:
        self._cancel_deadline()
        super().allHeadersReceived()
        # A request without a body goes on to allContentReceived at once,
        # which cancels this again.
        self._start_deadline("body")

    def rawDataReceived(self, data: bytes) -> None:
        # Body octets (a body is read in raw mode): each BODY_PROGRESS of
        # them gives the body its time again.
        if self._request_deadline is not None and self._body_progress >= 0:
            self._body_progress += len(data)
            if self._body_progress >= BODY_PROGRESS:
                self._start_deadline("body")
        super().rawDataReceived(data)

    def allContentReceived(self) -> None:
        self._cancel_deadline()
        self._handling = True
        super().allContentReceived()

    def requestDone(self, request: Any) -> None:
        self._handling = False
        super().requestDone(request)

    def loseConnection(self) -> None:
        # Whoever closes (a 400 for a malformed request, the idle timeout,
        # a response on a non-persistent connection) is done with the client.
        self._cancel_deadline()
        super().loseConnection()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self._cancel_deadline()
        super().connectionLost(reason)

    def _start_deadline(self, part: str) -> None:
        if self.request_timeout <= 0:
            return
        self._cancel_deadline()
        # Only the body's deadline is given again as octets come.
        self._body_progress = 0 if part == "body" else -1
        self._request_deadline = self.callLater(self.request_timeout, functools.partial(self._request_timed_out, part))

    def _cancel_deadline(self) -> None:
        deadline, self._request_deadline = self._request_deadline, None
        if deadline is not None and deadline.active():
            deadline.cancel()

    def _request_timed_out(self, part: str) -> None:
        """
        Answer 408 and close.  Nothing of a response can have been sent for
        a request still being received (the resource has not seen it; at
        most a 100 Continue, which is not a response), so the 408 is the
        whole answer.
        """
        self._request_deadline = None
        transport = self.transport
        if transport is None or getattr(transport, "disconnecting", False):
            return
        log.info(
            "HTTP request {part} from {peer} not received within {timeout} seconds; closing the connection",
            part=part,
            peer=str(transport.getPeer()),
            timeout=self.request_timeout,
        )
        self._answer_and_close(
            408, b"Request Timeout", f"the request {part} was not received within {self.request_timeout:g} seconds"
        )

    def lineLengthExceeded(self, line: bytes) -> None:
        """
        A request line or header field longer than Twisted reads
        (C{MAX_LENGTH}, 16 KiB) gets an answer, where Twisted's own closes
        the connection without one: 414 for the request line (no request
        has begun), 431 for a header field (RFC 9112 section 3, RFC 6585
        section 5).
        """
        if self.transport is None or getattr(self.transport, "disconnecting", False):
            return
        if not self.requests:
            self._answer_and_close(414, b"URI Too Long", f"the request line is longer than {self.MAX_LENGTH} octets")
        else:
            self._answer_and_close(
                431, b"Request Header Fields Too Large", f"a header field is longer than {self.MAX_LENGTH} octets"
            )

    def _answer_and_close(self, status: int, phrase: bytes, detail: str) -> None:
        """
        Answer a request that is not read to its end with a problem
        document, then close; what the client sends after it is ignored.
        As for the idle timeout, a client that does not read the answer is
        cut off C{abortTimeout} seconds later.
        """
        transport = self.transport
        assert transport is not None
        self._closing = True
        self.persistent = False
        body = orjson.dumps(HTTPProblem(status, detail).body())
        transport.write(
            b"HTTP/1.1 %d %s\r\n" % (status, phrase)
            + b"Connection: close\r\n"
            + b"Content-Type: " + PROBLEM_JSON + b"\r\n"
            + b"Content-Length: %d\r\n\r\n" % len(body)
            + body
        )
        if self.abortTimeout is not None:
            self._abortingCall = self.callLater(self.abortTimeout, self.forceAbortClient)
        self.loseConnection()


class JMAPSite(Site):
    """
    A L{Site} that turns on TCP_NODELAY for every connection, keeps request
    bodies within the configured limits, gives each request
    C{request_timeout} seconds to arrive (L{JMAPChannel}) and does not log
    requests itself (the API logs one line per request).

    Pass the service's C{reactor}: it runs the idle timeout and the request
    deadline.
    """

    def __init__(self, resource: Resource, max_body: int = 0, request_timeout: float = 0, **kwargs: Any) -> None:
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

        class _Channel(JMAPChannel):
            pass

        _Channel.request_timeout = request_timeout
        # The channel itself, not twisted.web's wrapper that could switch
        # to HTTP/2 (which jmapd does not install).
        self.protocol = _Channel  # type: ignore[method-assign,assignment]
        self.request_timeout = request_timeout

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
