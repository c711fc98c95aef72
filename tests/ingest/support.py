"""
Helpers for the LMTP tests: a jmapd service with an LMTP listener on
127.0.0.1 port 0, and a real LMTP client (the standard library's
C{smtplib.LMTP}) run in a thread, since it blocks.
"""

from __future__ import annotations

import smtplib
from collections.abc import Callable
from typing import Any, TypeVar

from twisted.internet import reactor
from twisted.internet.threads import deferToThread

from jmapd.ingest.service import LMTPService
from jmapd.storage import emails
from tests.support import ServerTestCase

T = TypeVar("T")


def message(subject: str = "Hello", to: str = "alice@example.com", body: str = "Hi Alice.", extra: str = "") -> bytes:
    """
    A small message with CRLF line endings.
    """
    text = (
        f"From: Bob <bob@example.org>\r\nTo: {to}\r\nSubject: {subject}\r\n"
        f"Message-ID: <{abs(hash((subject, body, extra)))}@example.org>\r\n{extra}\r\n{body}\r\n"
    )
    return text.encode("utf-8")


class LMTPTestCase(ServerTestCase):
    """
    A TestCase that starts jmapd with an LMTP listener of its own.
    """

    async def start_lmtp(self, data: str | None = None, **config: Any) -> tuple[Any, LMTPService, int]:
        """
        Start a server (on the data directory C{data} when given) and an
        LMTP service on a free port as a child of it.

        @return: the server, the LMTP service and its port.
        """
        if data is not None:
            config["db_path"] = data
        server = await self.start_server(**config)
        lmtp = LMTPService(server.env, reactor, port=0)
        lmtp.setServiceParent(server.service)
        port = await lmtp.listening
        return server, lmtp, port.getHost().port

    def in_thread(self, fn: Callable[..., T], *args: Any) -> Any:
        """
        Run C{fn(*args)} (a blocking client) in a thread; a Deferred.
        """
        return deferToThread(fn, *args)

    @staticmethod
    def connect(port: int) -> smtplib.LMTP:
        client = smtplib.LMTP("127.0.0.1", port, timeout=30)
        return client

    @staticmethod
    def stored(server: Any, account_id: str) -> list[bytes]:
        """
        The messages of the account's Emails, oldest first.
        """

        def read(txn: Any) -> list[str]:
            rows = emails.get_rows(txn, account_id, None, ["blob_id", "received_at"])
            return [row["blob_id"] for row in sorted(rows, key=lambda r: (r["received_at"], r["id"]))]

        return [server.env.blobs.read(blob_id) for blob_id in server.env.database.run_sync(read)]
