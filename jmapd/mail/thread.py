# -*- test-case-name: tests.mail.test_thread -*-
"""
The Thread data type (RFC 8621 section 3): Thread/get and Thread/changes.
In someone else's account a Thread is the Emails of it the user may read.

A Thread is its list of Emails; it exists while it has one.  Which Thread
a message joins is decided once, at ingest, by L{jmapd.storage.emails}.
"""

from __future__ import annotations

from typing import Any

from jmapd import sharing
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
        if account_id != ctx.principal.account_id:
            return len(self.fetch(ctx, account_id, None, frozenset({"id"}), {}))
        return emails.count_threads(ctx.txn, account_id)

    def fetch(
        self, ctx: Context, account_id: str, ids: list[str] | None, properties: frozenset[str], extra: dict[str, Any]
    ) -> list[dict[str, Any]]:
        found = emails.thread_email_ids(ctx.txn, account_id, ids)
        if account_id != ctx.principal.account_id:
            # Someone else's account: only the Emails the user may read;
            # a Thread with none of them does not exist for them.
            from jmapd.mail.email import EMAIL_TYPE

            every = [e for email_ids in found.values() for e in email_ids]
            visible = {e["id"] for e in EMAIL_TYPE.fetch(ctx, account_id, every, frozenset({"id"}), {})}
            found = {t: [e for e in ids_ if e in visible] for t, ids_ in found.items()}
            found = {t: ids_ for t, ids_ in found.items() if ids_}
        return [{"id": thread_id, "emailIds": email_ids} for thread_id, email_ids in found.items()]

    def do_changes(self, ctx: Context, arguments: dict[str, Any]) -> dict[str, Any]:
        """
        In a shared account, only Threads with an Email the user may read;
        one that went out of reach is reported destroyed, and no other
        (L{jmapd.sharing.hide_changes}).
        """
        response = super().do_changes(ctx, arguments)
        account_id = response["accountId"]

        def visible_of(ids: list[str]) -> set[str]:
            return {t["id"] for t in self.fetch(ctx, account_id, ids, frozenset({"id"}), {})}

        return sharing.hide_changes(ctx, arguments, response, self.name, visible_of)


THREAD_TYPE = ThreadType()


def register(registry: Registry) -> None:
    """
    Add Thread/get and Thread/changes.
    """
    register_standard_methods(registry, THREAD_TYPE)
