"""
Helpers for end-to-end tests: a real jmapd service on 127.0.0.1 port 0 with
a real SQLite file under the test's temporary directory, accounts made
directly in its database, and a treq client speaking HTTP to it.
"""

from __future__ import annotations

import base64
import os
from typing import Any

import orjson
import treq
from twisted.internet import reactor
from twisted.internet.defer import ensureDeferred
from twisted.trial.unittest import TestCase

from jmapd.auth.passwords import hash_password
from jmapd.config import default_config
from jmapd.protocol.engine import CORE
from jmapd.service import makeService
from jmapd.storage import accounts
from tests import pg

#: argon2 is slow on purpose; hash the test password once per process.
PASSWORD = "correct horse battery staple"
_PASSWORD_HASH = hash_password(PASSWORD)


def basic(name: str, password: str = PASSWORD) -> bytes:
    return b"Basic " + base64.b64encode(f"{name}:{password}".encode())


class Server:
    """
    One running service and what a test needs to talk to it.
    """

    def __init__(self, service: Any) -> None:
        self.service = service
        self.env = service.env
        port = service.port.getHost().port
        self.base = f"http://127.0.0.1:{port}"
        self.api_url = f"{self.base}/jmap/"

    def add_account(self, name: str, addresses: tuple[str, ...] = (), password: str | None = PASSWORD) -> str:
        """
        Create an account (synchronously, in the test's thread) and return
        its id.
        """
        password_hash = _PASSWORD_HASH if password == PASSWORD else (hash_password(password) if password else None)
        account = self.env.database.run_sync(
            accounts.add_account, name, password_hash, list(addresses), write=True
        )
        return str(account.id)

    async def request(
        self, method: str, path: str, body: bytes | None = None, headers: dict[bytes, list[bytes]] | None = None,
        auth: str | None = "alice",
    ) -> tuple[Any, bytes]:
        """
        Send one HTTP request and return (response, body bytes).
        """
        all_headers: dict[bytes, list[bytes]] = {}
        if auth is not None:
            all_headers[b"authorization"] = [basic(auth)]
        all_headers.update(headers or {})
        url = path if path.startswith("http") else self.base + path
        response = await treq.request(method, url, data=body, headers=all_headers, reactor=reactor, persistent=False)
        content = await response.content()
        return response, content

    async def api(self, calls: list[Any], using: list[str] | None = None, auth: str = "alice",
                  created_ids: dict[str, str] | None = None) -> dict[str, Any]:
        """
        POST a JMAP Request and return the decoded Response (asserting 200).
        """
        request: dict[str, Any] = {"using": using or [CORE], "methodCalls": calls}
        if created_ids is not None:
            request["createdIds"] = created_ids
        response, content = await self.request(
            "POST", "/jmap/", orjson.dumps(request), {b"content-type": [b"application/json"]}, auth=auth
        )
        if response.code != 200:
            raise AssertionError(f"API answered {response.code}: {content!r}")
        return orjson.loads(content)  # type: ignore[no-any-return]


class ServerTestCase(TestCase):
    """
    A TestCase with L{start_server}; services are stopped after each test.
    """

    def start_server(self, registry: Any = None, clock: Any = None, **config_changes: Any) -> Any:
        """
        Start a service with a fresh data directory; returns a Deferred
        firing with a L{Server}.  C{config_changes} are L{Config}
        attributes.
        """
        data = os.path.abspath(self.mktemp())
        settings = {"jmap_port": 0, "jmap_bind_addr": "127.0.0.1", "db_path": data, "worker_pool_size": 2}
        # A ...OnPostgreSQL test case gets a fresh PostgreSQL database.
        settings.update(pg.config_changes(self))
        # The LMTP listener stays off unless a test asks for it.
        settings["lmtp_port"] = 0
        settings.update(config_changes)
        config = default_config(**settings)
        service = makeService(config, reactor, registry=registry, clock=clock)
        service.startService()
        self.addCleanup(service.stopService)

        async def started() -> Server:
            await service.web.listening
            return Server(service)

        return ensureDeferred(started())
