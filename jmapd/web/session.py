# -*- test-case-name: tests.web.test_session -*-
"""
The Session resource at C{/.well-known/jmap} (RFC 8620 section 2.2).
"""

from __future__ import annotations

from typing import Any

from jmapd.protocol.session import build_session
from jmapd.web.auth import check_auth_version, unauthorized
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

        def read(txn: Any) -> Any:
            check_auth_version(txn, login)
            return build_session(self._env, txn, login.principal)

        from jmapd.web.auth import AuthVersionChanged

        try:
            session = await self._env.database.run_interaction(read)
        except AuthVersionChanged:
            self._auth.revalidate(request, login)
            raise unauthorized("the credentials changed; authenticate again") from None
        write_json(request, session)
