# -*- test-case-name: tests.web.test_health -*-
"""
C{/health}: whether this node can serve, for load balancers.

Unauthenticated (a health check has no account) and not counted against
C{rate-limit-anonymous} (a balancer checking every two seconds would use
it up, and then take the node out of service).  It answers C{200} with
C{{"status": "ok"}} once a read transaction on the database has run, and
C{503} with a problem document when it cannot: a node that cannot reach
PostgreSQL (or whose worker pool is stopping) leaves the balancer's
rotation.  It says nothing else about the node.
"""

from __future__ import annotations

from typing import Any

import orjson
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET

from jmapd.web.resource import HTTPProblem, write_body, write_problem

log = Logger()

_OK = orjson.dumps({"status": "ok"})


def _ping(txn: Any) -> None:
    txn.fetchvalue("SELECT 1")


class HealthResource(Resource):
    """
    C{GET} (or C{HEAD}) C{/health}.
    """

    isLeaf = True

    def __init__(self, env: Any) -> None:
        super().__init__()
        self._env = env

    def render_GET(self, request: Any) -> Any:
        try:
            d = self._env.database.run_interaction(_ping)
        except Exception:
            d = None
            self._unhealthy(request, Failure())
        if d is not None:
            d.addCallbacks(
                lambda _: write_body(request, 200, b"application/json", _OK),
                lambda failure: self._unhealthy(request, failure),
            )
        return NOT_DONE_YET

    render_HEAD = render_GET

    def _unhealthy(self, request: Any, failure: Failure) -> None:
        # A warning without the traceback: a balancer asks every few
        # seconds for as long as the database is away.
        log.warn(
            "health check: the database does not answer ({error})",
            error=" ".join(str(failure.value).split()) or type(failure.value).__name__,
        )
        write_problem(request, HTTPProblem(503, "the database does not answer"))
