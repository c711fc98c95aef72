# -*- test-case-name: tests.mail.test_thread -*-
"""
The Thread data type (RFC 8621 section 3): Thread/get and Thread/changes.

A Thread is its list of Emails; it exists while it has one.  Which Thread
a message joins is decided once, at ingest, by L{jmapd.storage.emails}.
"""

from __future__ import annotations

from typing import Any

from jmapd.mail import MAIL
from jmapd.protocol.engine import Context, Registry
from jmapd.protocol.standard import DataType, register_standard_methods
from jmapd.storage import emails


class ThreadType(DataType):
    name = "Thread"
    capability = MAIL
    properties = ("id", "emailIds")
    server_set = frozenset({"id", "emailIds"})
    methods = ("get", "changes")

    def count(self, ctx: Context, account_id: str) -> int:
        return emails.count_threads(ctx.txn, account_id)

    def fetch(
        self, ctx: Context, account_id: str, ids: list[str] | None, properties: frozenset[str], extra: dict[str, Any]
    ) -> list[dict[str, Any]]:
        found = emails.thread_email_ids(ctx.txn, account_id, ids)
        return [{"id": thread_id, "emailIds": email_ids} for thread_id, email_ids in found.items()]


THREAD_TYPE = ThreadType()


def register(registry: Registry) -> None:
    """
    Add Thread/get and Thread/changes.
    """
    register_standard_methods(registry, THREAD_TYPE)
