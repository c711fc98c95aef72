# -*- test-case-name: tests.web.test_api -*-
"""
The API resource (RFC 8620 section 3): POST a Request, get a Response.

The body is parsed and checked on the reactor thread (it is one orjson
call), then the whole Request runs in one worker-thread transaction, and
the Response is encoded there too, so the reactor only moves bytes.

A Request made only of methods that read no stored data (Core/echo) runs
on the reactor thread without a transaction when nothing has been
committed to the database since this account's last transaction
(L{jmapd.storage.freshness}): that transaction's checked auth version and
Session state are then still exactly what the database holds.
"""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

import orjson
from attrs import frozen
from twisted.logger import Logger

from jmapd.protocol.engine import execute
from jmapd.protocol.errors import RequestError, limit
from jmapd.protocol.pure import NoTransaction
from jmapd.protocol.request import parse_request
from jmapd.protocol.session import session_state
from jmapd.util.tticache import TTICache
from jmapd.web.auth import run_checked
from jmapd.web.resource import JSON, AsyncResource, HTTPProblem, body_size, write_body

log = Logger()

#: How long an account's last transaction is remembered for the
#: transaction-free path when the account sends nothing.
VALIDATED_TTI = 300.0
VALIDATED_MAX = 10_000

_NO_TRANSACTION = NoTransaction()


@frozen
class Validated:
    """
    What an account's last transaction established: the auth version it
    checked and the Session state it computed, valid while the database's
    change counter still has the value read before that transaction began.
    """

    counter: int
    auth_version: int
    session_state: str


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
        self._counter = env.database.change_counter()
        self._validated: TTICache[str, Validated] = TTICache(
            env.clock, VALIDATED_TTI, max_entries=VALIDATED_MAX, name="validated"
        )

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

        account_id = login.principal.account_id
        counter = None
        if self._counter is not None and env.registry.is_pure(jmap_request):
            counter = self._counter.value()
            validated = self._validated.get(account_id)
            if (
                validated is not None
                and validated.counter == counter
                and validated.auth_version == login.auth_version
            ):
                response = execute(
                    _NO_TRANSACTION, env, login.principal, jmap_request, validated.session_state
                )
                self._answer(request, login, jmap_request, started, orjson.dumps(response))
                return

        def run(txn: Any, login: Any) -> tuple[bytes, str, int]:
            state = session_state(env, txn, login.principal)
            response = execute(txn, env, login.principal, jmap_request, state)
            changed = txn.__dict__.get("changed_states")
            if changed:
                txn.after_commit(lambda: env.publish_states(changed))
            return orjson.dumps(response), state, login.auth_version

        body, state, auth_version = await run_checked(
            self._auth, env.database, request, login, run, write=env.registry.is_write(jmap_request)
        )
        if counter is not None:
            # The counter was read before the transaction began: a commit
            # after that moves it, so this can never vouch for newer data.
            self._validated.set(account_id, Validated(counter, auth_version, state))
        self._answer(request, login, jmap_request, started, body)

    def _answer(self, request: Any, login: Any, jmap_request: Any, started: float, body: bytes) -> None:
        write_body(request, 200, JSON, body)
        log.info(
            "API {account} [{methods}] 200 in {ms:.1f} ms",
            account=login.principal.name,
            methods=" ".join(call.name for call in jmap_request.method_calls),
            ms=(time.perf_counter() - started) * 1000,
        )
