# -*- test-case-name: tests.web.test_session -*-
"""
The Session resource at C{/.well-known/jmap} (RFC 8620 section 2.2).
"""

from __future__ import annotations

from typing import Any

from jmapd.protocol.session import build_session
from jmapd.web.auth import run_checked
from jmapd.web.resource import AsyncResource, write_json


class SessionResource(AsyncResource):
    """
    GET returns the authenticated user's Session object.
    """

    def __init__(self, env: Any, authenticator: Any) -> None:
        super().__init__()
        self._env = env
        self._auth = authenticator

    async def handle_GET(self, request: Any) -> None:
        login = await self._auth.authenticate(request)

        def read(txn: Any, login: Any) -> Any:
            return build_session(self._env, txn, login.principal)

        session = await run_checked(self._auth, self._env.database, request, login, read)
        write_json(request, session)
