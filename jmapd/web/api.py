# -*- test-case-name: tests.web.test_api -*-
"""
The API resource (RFC 8620 section 3): POST a Request, get a Response.

The body is parsed and checked on the reactor thread (it is one orjson
call), then the whole Request runs in one worker-thread transaction, and
the Response is encoded there too, so the reactor only moves bytes.
"""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

import orjson
from twisted.logger import Logger

from jmapd.protocol.engine import execute
from jmapd.protocol.errors import RequestError, limit
from jmapd.protocol.request import parse_request
from jmapd.protocol.session import session_state
from jmapd.web.auth import run_checked
from jmapd.web.resource import JSON, AsyncResource, HTTPProblem, body_size, write_body

log = Logger()


def request_problem(error: RequestError) -> HTTPProblem:
    return HTTPProblem(error.status, error.detail, type=error.type, extra={"limit": error.limit} if error.limit else None)


class APIResource(AsyncResource):
    """
    POST: run a JMAP Request for the authenticated principal.
    """

    def __init__(self, env: Any, authenticator: Any) -> None:
        super().__init__()
        self._env = env
        self._auth = authenticator
        self._inflight: Counter[str] = Counter()

    async def handle_POST(self, request: Any) -> None:
        started = time.perf_counter()
        login = await self._auth.authenticate(request)
        config = self._env.config
        account_id = login.principal.account_id
        if self._inflight[account_id] >= config.max_concurrent_requests:
            raise request_problem(
                limit(
                    "maxConcurrentRequests",
                    f"at most {config.max_concurrent_requests} API requests may run at once for one account",
                )
            )
        self._inflight[account_id] += 1
        try:
            await self._run(request, login, started)
        finally:
            self._inflight[account_id] -= 1
            if self._inflight[account_id] <= 0:
                del self._inflight[account_id]

    async def _run(self, request: Any, login: Any, started: float) -> None:
        env = self._env
        config = env.config
        size = body_size(request)
        if size > config.max_size_request:
            raise request_problem(
                limit("maxSizeRequest", f"the request is {size} bytes; the limit is {config.max_size_request}")
            )
        try:
            jmap_request = parse_request(
                request.content.read(), env.registry.capabilities, config.max_calls_in_request
            )
        except RequestError as e:
            log.info(
                "API {account}: {type} ({detail})", account=login.principal.name, type=e.type, detail=e.detail
            )
            raise request_problem(e) from None

        def run(txn: Any, login: Any) -> bytes:
            state = session_state(env, txn, login.principal)
            response = execute(txn, env, login.principal, jmap_request, state)
            changed = txn.__dict__.get("changed_states")
            if changed:
                txn.after_commit(lambda: env.publish_states(changed))
            return orjson.dumps(response)

        body = await run_checked(
            self._auth, env.database, request, login, run, write=env.registry.is_write(jmap_request)
        )
        write_body(request, 200, JSON, body)
        log.info(
            "API {account} [{methods}] 200 in {ms:.1f} ms",
            account=login.principal.name,
            methods=" ".join(call.name for call in jmap_request.method_calls),
            ms=(time.perf_counter() - started) * 1000,
        )
