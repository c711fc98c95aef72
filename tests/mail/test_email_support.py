"""
What the Email and Thread tests share: an environment with Core and Mail
registered on a real SQLite file, messages built for the test, delivery
straight into the store, and an independent recount of the Mailbox counts
to hold the incremental ones against.
"""

from __future__ import annotations

from collections.abc import Iterable
from email.utils import formatdate
from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from jmapd import mail
from jmapd.mail import MAIL
from jmapd.protocol.engine import CORE, AccountAccess, Registry
from jmapd.storage import blobs as blob_storage
from jmapd.storage import emails, mailboxes
from tests.protocol.test_engine import add_principal, make_environment, run_request

USING = (CORE, MAIL)


def message(
    subject: str = "Hello",
    message_id: str | None = None,
    in_reply_to: str | None = None,
    references: Iterable[str] = (),
    body: str = "Hello there.\r\n",
    sender: str = "Alice Example <alice@example.com>",
    to: str = "bob@example.org",
    date: str = "Mon, 02 Oct 2023 10:00:00 +0200",
    headers: Iterable[tuple[str, str]] = (),
) -> bytes:
    """
    A small plain-text message with the given threading headers.
    """
    lines = [f"From: {sender}", f"To: {to}", f"Subject: {subject}", f"Date: {date}"]
    if message_id is not None:
        lines.append(f"Message-ID: <{message_id}>")
    if in_reply_to is not None:
        lines.append(f"In-Reply-To: <{in_reply_to}>")
    refs = list(references)
    if refs:
        lines.append("References: " + " ".join(f"<{r}>" for r in refs))
    lines.extend(f"{name}: {value}" for name, value in headers)
    lines.append("Content-Type: text/plain; charset=utf-8")
    return ("\r\n".join(lines) + "\r\n\r\n" + body).encode("utf-8")


MULTIPART = (
    b"From: =?UTF-8?Q?Jos=C3=A9?= <jose@example.com>\r\n"
    b"To: Friends: a@example.com, \"B. Person\" <b@example.com>;, c@example.com\r\n"
    b"Cc: d@example.com\r\n"
    b"Subject: =?UTF-8?Q?Caf=C3=A9?= plans\r\n"
    b"Date: Tue, 03 Oct 2023 08:30:00 +0000\r\n"
    b"Message-ID: <multi@example.com>\r\n"
    b"List-Post: <mailto:list@example.com>\r\n"
    b"X-Custom: one\r\n"
    b"X-Custom: two\r\n"
    b"MIME-Version: 1.0\r\n"
    b"Content-Type: multipart/mixed; boundary=\"outer\"\r\n"
    b"\r\n"
    b"--outer\r\n"
    b"Content-Type: multipart/alternative; boundary=\"inner\"\r\n"
    b"\r\n"
    b"--inner\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\n"
    b"Content-Transfer-Encoding: quoted-printable\r\n"
    b"\r\n"
    b"Caf=C3=A9 at noon?\r\n"
    b"--inner\r\n"
    b"Content-Type: text/html; charset=utf-8\r\n"
    b"\r\n"
    b"<p>Caf\xc3\xa9 at <b>noon</b>?</p>\r\n"
    b"--inner--\r\n"
    b"--outer\r\n"
    b"Content-Type: application/pdf; name=\"plan.pdf\"\r\n"
    b"Content-Disposition: attachment; filename=\"plan.pdf\"\r\n"
    b"Content-Transfer-Encoding: base64\r\n"
    b"\r\n"
    b"JVBERi0xLjQK\r\n"
    b"--outer\r\n"
    b"Content-Type: message/rfc822\r\n"
    b"\r\n"
    b"From: inner@example.com\r\n"
    b"Subject: Inner message\r\n"
    b"Message-ID: <inner@example.com>\r\n"
    b"\r\n"
    b"Inside.\r\n"
    b"--outer--\r\n"
)


class MailTestCase(SynchronousTestCase):
    """
    A fresh store with Core and Mail registered and the account alice.
    """

    config: dict[str, Any] = {}

    def setUp(self) -> None:
        registry = Registry()
        mail.register(registry)
        self.shares: dict[str, list[str]] = {}
        registry.account_lookups.append(self._shared_accounts)
        self.env = make_environment(self, registry, **self.config)
        self.env.clock.advance(1_700_000_000)
        self.principals = {}
        self.alice = self.add_account("alice")

    def _shared_accounts(self, env: Any, txn: Any, principal: Any) -> list[AccountAccess]:
        return [
            AccountAccess(self.principals[name].account_id, name, False, False, frozenset({CORE, MAIL}))
            for name in self.shares.get(principal.name, [])
        ]

    def add_account(self, name: str) -> str:
        principal = add_principal(self.env, name)
        self.principals[name] = principal
        return str(principal.account_id)

    def run_sync(self, fn: Any, *args: Any, write: bool = True) -> Any:
        return self.env.database.run_sync(fn, *args, write=write)

    # -- calling methods ------------------------------------------------

    def calls(self, calls: list[Any], who: str = "alice", created_ids: Any = None) -> list[Any]:
        response = run_request(self.env, self.principals[who], calls, USING, created_ids=created_ids)
        return response["methodResponses"]  # type: ignore[no-any-return]

    def call(self, name: str, arguments: dict[str, Any], who: str = "alice") -> dict[str, Any]:
        """
        Run one method call and return its response arguments, failing
        the test on an error response.
        """
        arguments = {"accountId": self.principals[who].account_id, **arguments}
        [[response_name, response, _]] = self.calls([[name, arguments, "c"]], who)
        if response_name == "error":
            self.fail(f"{name} failed: {response}")
        return response  # type: ignore[no-any-return]

    def call_error(self, name: str, arguments: dict[str, Any], who: str = "alice") -> dict[str, Any]:
        """
        Run one method call that must fail; return the error arguments.
        """
        arguments = {"accountId": self.principals[who].account_id, **arguments}
        [[response_name, response, _]] = self.calls([[name, arguments, "c"]], who)
        self.assertEqual(response_name, "error", response)
        return response  # type: ignore[no-any-return]

    def get(self, ids: list[str], properties: list[str] | None = None, **extra: Any) -> list[dict[str, Any]]:
        arguments: dict[str, Any] = {"ids": ids, **extra}
        if properties is not None:
            arguments["properties"] = properties
        return self.call("Email/get", arguments)["list"]  # type: ignore[no-any-return]

    def get_one(self, email_id: str, properties: list[str] | None = None, **extra: Any) -> dict[str, Any]:
        [found] = self.get([email_id], properties, **extra)
        return found

    def state(self, type_name: str, who: str = "alice") -> str:
        return self.call(f"{type_name}/get", {"ids": []}, who)["state"]  # type: ignore[no-any-return]

    def changes(self, type_name: str, since: str, who: str = "alice") -> dict[str, Any]:
        return self.call(f"{type_name}/changes", {"sinceState": since}, who)

    # -- data --------------------------------------------------------------

    def mailbox(self, role: str, who: str = "alice") -> str:
        account_id = self.principals[who].account_id
        found = self.run_sync(mailboxes.find_by_role, account_id, role, write=False)
        assert found is not None, role
        return str(found)

    def new_mailbox(self, name: str, who: str = "alice") -> str:
        account_id = self.principals[who].account_id
        return str(self.run_sync(mailboxes.add_mailbox, account_id, name).id)

    def upload(self, data: bytes, who: str = "alice") -> str:
        """
        Store bytes as an upload of the account (temporary access).
        """
        blob_id = self.env.blobs.put(data)
        account_id = self.principals[who].account_id
        now = self.env.clock.seconds()
        self.run_sync(blob_storage.add_blob, account_id, blob_id, len(data), "message/rfc822", now, now + 3600)
        return str(blob_id)

    def deliver(
        self,
        raw: bytes,
        roles: Iterable[str] = ("inbox",),
        keywords: Iterable[str] = (),
        received_at: int | None = None,
        who: str = "alice",
        mailbox_ids: Iterable[str] = (),
    ) -> emails.Created:
        """
        Put a message straight into the store, as delivery will.
        """
        account_id = self.principals[who].account_id
        targets = [self.mailbox(role, who) for role in roles] + list(mailbox_ids)
        now = self.env.clock.seconds()
        if received_at is None:
            self.env.clock.advance(1)
            received_at = int(self.env.clock.seconds() * 1000)
        return self.run_sync(  # type: ignore[no-any-return]
            emails.ingest, self.env.blobs, account_id, raw, targets, list(keywords), received_at, now
        )

    # -- counts --------------------------------------------------------------

    def counts(self, who: str = "alice") -> dict[str, tuple[int, int, int, int]]:
        """
        The stored (incrementally kept) counts of every Mailbox.
        """
        account_id = self.principals[who].account_id

        def read(txn: Any) -> dict[str, tuple[int, int, int, int]]:
            return {m: mailboxes.get_counts(txn, account_id, m) for m in mailboxes.mailbox_ids(txn, account_id)}

        return self.run_sync(read, write=False)  # type: ignore[no-any-return]

    def recount(self, who: str = "alice") -> dict[str, tuple[int, int, int, int]]:
        """
        The counts computed from scratch from the Emails, the way RFC 8621
        section 2 defines them (unread: neither $seen nor $draft).
        """
        account_id = self.principals[who].account_id

        def read(txn: Any) -> dict[str, tuple[int, int, int, int]]:
            result = {}
            keywords: dict[str, set[str]] = {}
            for email_id, keyword in txn.fetchall(
                "SELECT email_id, keyword FROM email_keywords WHERE account_id = ?", (account_id,)
            ):
                keywords.setdefault(email_id, set()).add(keyword)
            threads = dict(txn.fetchall("SELECT id, thread_id FROM emails WHERE account_id = ?", (account_id,)))
            for mailbox_id in mailboxes.mailbox_ids(txn, account_id):
                members = [
                    row[0]
                    for row in txn.fetchall(
                        "SELECT email_id FROM email_mailboxes WHERE account_id = ? AND mailbox_id = ?",
                        (account_id, mailbox_id),
                    )
                ]
                unread = [e for e in members if not ({"$seen", "$draft"} & keywords.get(e, set()))]
                result[mailbox_id] = (
                    len(members),
                    len(unread),
                    len({threads[e] for e in members}),
                    len({threads[e] for e in unread}),
                )
            return result

        return self.run_sync(read, write=False)  # type: ignore[no-any-return]

    def assertCountsExact(self, who: str = "alice") -> None:
        """
        The stored Mailbox counts equal a recount from scratch.
        """
        self.assertEqual(self.counts(who), self.recount(who))

    def count_of(self, role: str, who: str = "alice") -> tuple[int, int, int, int]:
        return self.counts(who)[self.mailbox(role, who)]

    def thread_of(self, email_id: str) -> str:
        return self.get_one(email_id, ["threadId"])["threadId"]  # type: ignore[no-any-return]

    def thread_emails(self, thread_id: str) -> list[str]:
        [thread] = self.call("Thread/get", {"ids": [thread_id]})["list"]
        return thread["emailIds"]  # type: ignore[no-any-return]


__all__ = ["MailTestCase", "message", "MULTIPART", "formatdate"]
