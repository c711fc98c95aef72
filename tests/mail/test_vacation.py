"""
Tests for L{jmapd.mail.vacation}: VacationResponse/get and /set, and the
auto-reply sent at delivery under the rules of RFC 3834.
"""

from __future__ import annotations

import email
import email.policy
import os
from typing import Any

import orjson
from twisted.internet.defer import ensureDeferred
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from jmapd.config import default_config
from jmapd.environment import Environment
from jmapd.mail import MAIL, vacation
from jmapd.mail.vacation import VACATION_RESPONSE, after_delivery, build_reply, why_not
from jmapd.mime.parse import parse_message
from jmapd.protocol.engine import CORE
from jmapd.service import build_registry
from jmapd.storage import accounts, open_database
from jmapd.storage import vacation as storage
from tests import pg
from tests.ingest.support import LMTPTestCase
from tests.support import ServerTestCase

USING = [CORE, MAIL, VACATION_RESPONSE]

DAY = 86400.0
#: 2024-07-01T00:00:00Z
JULY = 1719792000.0


def registry_with_vacation() -> Any:
    registry = build_registry()
    vacation.register(registry)
    return registry


def vacation_set(account_id: str, call_id: str, **arguments: Any) -> list[Any]:
    """
    A VacationResponse/set method call.
    """
    return ["VacationResponse/set", {"accountId": account_id, **arguments}, call_id]


class VacationResponseMethodTests(ServerTestCase):
    """
    VacationResponse/get and /set over the API.
    """

    def test_capabilityAdvertised(self) -> Any:
        """
        Once registered, urn:ietf:params:jmap:vacationresponse is in the
        session's capabilities and the account's, both empty objects.
        """

        async def run() -> None:
            server = await self.start_server(registry=registry_with_vacation())
            alice = server.add_account("alice", ("alice@example.com",))
            response, body = await server.request("GET", "/.well-known/jmap")
            session = orjson.loads(body)
            self.assertEqual(session["capabilities"][VACATION_RESPONSE], {})
            self.assertEqual(session["accounts"][alice]["accountCapabilities"][VACATION_RESPONSE], {})

        return ensureDeferred(run())

    def test_notAdvertisedUnregistered(self) -> Any:
        """
        A registry without the data type advertises no such capability.
        """

        async def run() -> None:
            registry = build_registry()
            registry.capabilities.pop(VACATION_RESPONSE, None)
            registry.methods.pop("VacationResponse/get", None)
            server = await self.start_server(registry=registry)
            server.add_account("alice", ("alice@example.com",))
            _, body = await server.request("GET", "/.well-known/jmap")
            self.assertNotIn(VACATION_RESPONSE, orjson.loads(body)["capabilities"])

        return ensureDeferred(run())

    def test_getDefault(self) -> Any:
        """
        An account's VacationResponse exists from the start: the singleton,
        disabled, every other property null.
        """

        async def run() -> None:
            server = await self.start_server(registry=registry_with_vacation())
            alice = server.add_account("alice", ("alice@example.com",))
            response = await server.api([["VacationResponse/get", {"accountId": alice}, "0"]], using=USING)
            result = response["methodResponses"][0][1]
            self.assertEqual(
                result["list"],
                [
                    {
                        "id": "singleton",
                        "isEnabled": False,
                        "fromDate": None,
                        "toDate": None,
                        "subject": None,
                        "textBody": None,
                        "htmlBody": None,
                    }
                ],
            )
            response = await server.api(
                [["VacationResponse/get", {"accountId": alice, "ids": ["singleton", "other"]}, "0"]], using=USING
            )
            self.assertEqual(response["methodResponses"][0][1]["notFound"], ["other"])

        return ensureDeferred(run())

    def test_setAndGet(self) -> Any:
        """
        /set updates the singleton; /get returns what was set, with a new
        state.
        """

        async def run() -> None:
            server = await self.start_server(registry=registry_with_vacation())
            alice = server.add_account("alice", ("alice@example.com",))
            update = {
                "isEnabled": True,
                "fromDate": "2024-07-01T00:00:00Z",
                "toDate": "2024-07-15T00:00:00Z",
                "subject": "Away",
                "textBody": "Back on the 15th.",
            }
            response = await server.api(
                [
                    vacation_set(alice, "0", update={"singleton": update}),
                    ["VacationResponse/get", {"accountId": alice}, "1"],
                ],
                using=USING,
            )
            set_result = response["methodResponses"][0][1]
            self.assertEqual(set_result["updated"], {"singleton": None})
            self.assertNotEqual(set_result["oldState"], set_result["newState"])
            got = response["methodResponses"][1][1]
            self.assertEqual(got["state"], set_result["newState"])
            self.assertEqual(got["list"][0], {"id": "singleton", "htmlBody": None, **update})

        return ensureDeferred(run())

    def test_setErrors(self) -> Any:
        """
        A date that is not a UTCDate, a non-boolean isEnabled or a
        non-string body is invalidProperties naming the property, and
        another id is notFound.
        """

        async def run() -> None:
            server = await self.start_server(registry=registry_with_vacation())
            alice = server.add_account("alice", ("alice@example.com",))
            response = await server.api(
                [
                    vacation_set(alice, "0", update={"singleton": {"fromDate": "2024-07-01T00:00:00+02:00"}}),
                    vacation_set(alice, "1", update={"singleton": {"isEnabled": 1}}),
                    vacation_set(alice, "2", update={"singleton": {"textBody": 5}}),
                    vacation_set(alice, "3", update={"other": {"isEnabled": True}}),
                ],
                using=USING,
            )
            first = response["methodResponses"][0][1]
            self.assertEqual(first["notUpdated"]["singleton"]["type"], "invalidProperties")
            self.assertEqual(first["notUpdated"]["singleton"]["properties"], ["fromDate"])
            self.assertEqual(response["methodResponses"][1][1]["notUpdated"]["singleton"]["properties"], ["isEnabled"])
            self.assertEqual(response["methodResponses"][2][1]["notUpdated"]["singleton"]["properties"], ["textBody"])
            self.assertEqual(response["methodResponses"][3][1]["notUpdated"]["other"]["type"], "notFound")

        return ensureDeferred(run())

    def test_datesNormalised(self) -> Any:
        """
        A fromDate or toDate with a zero fraction (".000Z", as
        JavaScript's toISOString writes) is kept without it, since RFC
        8620 section 1.4 says a UTCDate omits a zero fraction; /set
        reports the stored form in "updated", and /get returns it.  A
        date already in normal form is not reported.
        """

        async def run() -> None:
            server = await self.start_server(registry=registry_with_vacation())
            alice = server.add_account("alice", ("alice@example.com",))
            update = {"fromDate": "2024-07-01T00:00:00.000Z", "toDate": "2024-07-15T00:00:00.250Z"}
            response = await server.api(
                [
                    vacation_set(alice, "0", update={"singleton": update}),
                    ["VacationResponse/get", {"accountId": alice, "properties": ["fromDate", "toDate"]}, "1"],
                    vacation_set(alice, "2", update={"singleton": {"fromDate": "2024-07-02T00:00:00Z"}}),
                ],
                using=USING,
            )
            set_result, get_result, second = (r[1] for r in response["methodResponses"])
            self.assertEqual(set_result["updated"], {"singleton": {"fromDate": "2024-07-01T00:00:00Z",
                                                                   "toDate": "2024-07-15T00:00:00.25Z"}})
            self.assertEqual(get_result["list"], [{"id": "singleton", "fromDate": "2024-07-01T00:00:00Z",
                                                   "toDate": "2024-07-15T00:00:00.25Z"}])
            self.assertEqual(second["updated"], {"singleton": None})

        return ensureDeferred(run())

    def test_createAndDestroyAreSingleton(self) -> Any:
        """
        Creating a VacationResponse (valid or not) and destroying the
        singleton are refused with the C{singleton} SetError of RFC 8620
        section 5.3; destroying another id is notFound, and the singleton
        is still there, unchanged.
        """

        async def run() -> None:
            server = await self.start_server(registry=registry_with_vacation())
            alice = server.add_account("alice", ("alice@example.com",))
            response = await server.api(
                [
                    vacation_set(
                        alice,
                        "0",
                        create={"c": {"isEnabled": True}, "d": {"nonsense": 1}},
                        destroy=["singleton", "other"],
                    ),
                    ["VacationResponse/get", {"accountId": alice}, "1"],
                ],
                using=USING,
            )
            result = response["methodResponses"][0][1]
            self.assertEqual({k: v["type"] for k, v in result["notCreated"].items()},
                             {"c": "singleton", "d": "singleton"})
            self.assertEqual({k: v["type"] for k, v in result["notDestroyed"].items()},
                             {"singleton": "singleton", "other": "notFound"})
            self.assertEqual(result["oldState"], result["newState"])
            self.assertEqual(response["methodResponses"][1][1]["list"][0]["isEnabled"], False)

        return ensureDeferred(run())


def incoming(headers: str = "", to: str = "alice@example.com", subject: str = "Lunch?") -> dict[str, Any]:
    """
    The parse of a message to Alice from Bob.
    """
    raw = (
        f"From: Bob <bob@example.org>\r\nTo: {to}\r\nSubject: {subject}\r\n"
        f"Message-ID: <m1@example.org>\r\nReferences: <m0@example.org>\r\n{headers}\r\nHi\r\n"
    ).encode()
    return parse_message(raw)


class AutoReplyTests(SynchronousTestCase):
    """
    L{after_delivery}: when a reply is sent, and what it looks like.
    """

    def setUp(self) -> None:
        config = default_config(db_path=os.path.abspath(self.mktemp()))
        self.database = open_database(config)
        self.addCleanup(self.database.close)
        self.env = Environment(config=config, registry=None, database=self.database, blobs=None, clock=Clock())
        self.alice = self.database.run_sync(
            accounts.add_account, "alice", None, ["alice@example.com", "al@example.com"], write=True
        ).id
        self.queued: list[tuple[str, str, list[str], bytes]] = []
        self.enable()

    def queue(self, txn: Any, env: Any, account_id: str, mail_from: str, rcpt_to: list[str], raw: bytes) -> str:
        self.queued.append((account_id, mail_from, rcpt_to, raw))
        return f"q{len(self.queued)}"

    def enable(self, **changes: Any) -> None:
        settings: dict[str, Any] = {"is_enabled": True, "subject": None, "text_body": "I am away."}
        settings.update(changes)
        self.database.run_sync(storage.set_vacation, self.alice, storage.Vacation(**settings), write=True)

    def deliver(self, parsed: dict[str, Any], sender: str = "bob@example.org", now: float = JULY) -> str | None:
        return self.database.run_sync(  # type: ignore[no-any-return]
            after_delivery, self.env, self.alice, sender, parsed, now, self.queue, write=True
        )

    def test_replyOncePerInterval(self) -> None:
        """
        A sender gets one reply; another message within
        vacation-reply-interval gets none; after it, one more.  Another
        sender gets their own.
        """
        self.assertEqual(self.deliver(incoming()), "q1")
        self.assertIsNone(self.deliver(incoming(), now=JULY + DAY))
        self.assertEqual(self.deliver(incoming(), sender="carol@example.org", now=JULY + DAY), "q2")
        self.assertEqual(self.deliver(incoming(), now=JULY + 7 * DAY), "q3")
        self.assertEqual([rcpt for _, _, rcpt, _ in self.queued], [["bob@example.org"], ["carol@example.org"],
                                                                   ["bob@example.org"]])

    def test_changeStartsAgain(self) -> None:
        """
        Changing the VacationResponse forgets whom it answered.
        """
        self.deliver(incoming())
        self.enable(text_body="Still away.")
        self.assertEqual(self.deliver(incoming(), now=JULY + 60), "q2")

    def test_replyMessage(self) -> None:
        """
        The reply goes from the null reverse-path to the envelope sender,
        from the address the message was sent to, with Auto-Submitted:
        auto-replied, In-Reply-To and References, and "Auto: " and the
        original subject when the VacationResponse has none.
        """
        self.deliver(incoming(to="Al <AL@example.com>"))
        ((account, mail_from, rcpt_to, raw),) = self.queued
        self.assertEqual((account, mail_from, rcpt_to), (self.alice, "", ["bob@example.org"]))
        reply = email.message_from_bytes(raw, policy=email.policy.default)
        self.assertEqual(reply["From"], "al@example.com")
        self.assertEqual(reply["To"], "bob@example.org")
        self.assertEqual(reply["Subject"], "Auto: Lunch?")
        self.assertEqual(reply["Auto-Submitted"], "auto-replied")
        self.assertEqual(reply["In-Reply-To"], "<m1@example.org>")
        self.assertEqual(reply["References"], "<m0@example.org> <m1@example.org>")
        self.assertEqual(reply.get_content().strip(), "I am away.")
        self.assertIn(b"\r\n", raw)

    def test_senderCaseKept(self) -> None:
        """
        The reply goes to the envelope sender exactly as given, since the
        local part of an address may be case-sensitive (RFC 5321 section
        2.4); once-per-interval still compares senders without regard to
        case.
        """
        self.assertEqual(self.deliver(incoming(), sender="Bob.Smith@Example.org"), "q1")
        ((_, _, rcpt_to, raw),) = self.queued
        self.assertEqual(rcpt_to, ["Bob.Smith@Example.org"])
        reply = email.message_from_bytes(raw, policy=email.policy.default)
        self.assertEqual(reply["To"], "Bob.Smith@Example.org")
        self.assertIsNone(self.deliver(incoming(), sender="bob.smith@example.org", now=JULY + 60))

    def test_subjectAndHtml(self) -> None:
        """
        The VacationResponse's own subject is used; an HTML body alone
        gives a text/plain part made from it and the HTML as the
        alternative.
        """
        self.enable(subject="Gone fishing", text_body=None, html_body="<p>Back <b>soon</b>.</p>")
        self.deliver(incoming())
        reply = email.message_from_bytes(self.queued[0][3], policy=email.policy.default)
        self.assertEqual(reply["Subject"], "Gone fishing")
        self.assertEqual(reply.get_content_type(), "multipart/alternative")
        self.assertIn("Back soon.", reply.get_body(("plain",)).get_content())
        self.assertIn("<b>soon</b>", reply.get_body(("html",)).get_content())

    def test_sevenBit(self) -> None:
        """
        A reply with non-ASCII text or long lines is 7-bit clean: its parts
        are quoted-printable or base64, because the relay client does not
        ask for 8BITMIME (RFC 6152) and no line may exceed 998 octets (RFC
        5322 section 2.1.1).
        """
        long_line = "x" * 1200
        self.enable(subject="Weg ☀", text_body=f"Bin weg, tschüß.\n{long_line}\n", html_body="<p>Tschüß</p>")
        self.deliver(incoming(subject="Grüße"))
        raw = self.queued[0][3]
        self.assertTrue(raw.isascii())
        self.assertTrue(all(len(line) <= 998 for line in raw.split(b"\r\n")))
        reply = email.message_from_bytes(raw, policy=email.policy.default)
        self.assertEqual(reply["Subject"], "Weg ☀")
        self.assertEqual(reply.get_body(("plain",)).get_content().replace("\r\n", "\n"),
                         f"Bin weg, tschüß.\n{long_line}\n")
        self.assertIn("Tschüß", reply.get_body(("html",)).get_content())

    def test_defaultBody(self) -> None:
        """
        Without any body, a default text is sent.
        """
        self.enable(text_body=None)
        self.deliver(incoming())
        reply = email.message_from_bytes(self.queued[0][3], policy=email.policy.default)
        self.assertEqual(reply.get_content().replace("\r\n", "\n"), vacation.DEFAULT_BODY)

    def test_noReplyTo(self) -> None:
        """
        No reply to: the null sender, robots (mailer-daemon, owner-*,
        *-request, noreply), mailing lists (List-Id, List-Unsubscribe, and
        any other List-* field such as List-Unsubscribe-Post),
        bulk/list/junk Precedence, any Auto-Submitted but "no",
        X-Auto-Response-Suppress, the account itself, or mail that does
        not name the account in To/Cc.
        """
        cases = [
            (incoming(), ""),
            (incoming(), "MAILER-DAEMON@example.org"),
            (incoming(), "owner-list@example.org"),
            (incoming(), "list-request@example.org"),
            (incoming(), "noreply@example.org"),
            (incoming(), "no-reply+123@example.org"),
            (incoming("List-Id: <list.example.org>\r\n"), "bob@example.org"),
            (incoming("List-Unsubscribe: <mailto:u@example.org>\r\n"), "bob@example.org"),
            (incoming("List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n"), "bob@example.org"),
            (incoming("List-Software: Mailman\r\n"), "bob@example.org"),
            (incoming("Precedence: bulk\r\n"), "bob@example.org"),
            (incoming("Precedence: list\r\n"), "bob@example.org"),
            (incoming("Precedence: junk\r\n"), "bob@example.org"),
            (incoming("Auto-Submitted: auto-replied\r\n"), "bob@example.org"),
            (incoming("Auto-Submitted: auto-generated\r\n"), "bob@example.org"),
            (incoming("X-Auto-Response-Suppress: OOF, AutoReply\r\n"), "bob@example.org"),
            (incoming(), "alice@example.com"),
            (incoming(to="someone@example.org"), "bob@example.org"),
        ]
        for parsed, sender in cases:
            self.assertIsNone(self.deliver(parsed, sender=sender), sender)
        self.assertEqual(self.queued, [])

    def test_autoSubmittedNo(self) -> None:
        """
        Auto-Submitted: no is a message from a person: it gets a reply, as
        does mail with the account in Cc.
        """
        self.assertEqual(self.deliver(incoming("Auto-Submitted: no\r\n")), "q1")
        self.assertEqual(
            self.deliver(incoming("Cc: alice@example.com\r\n", to="x@example.org"), sender="carol@example.org"), "q2"
        )

    def test_dateWindow(self) -> None:
        """
        A reply is sent on or after fromDate and before toDate, not
        outside, and never when disabled.
        """
        start, end = JULY, JULY + 14 * DAY
        self.enable(from_date="2024-07-01T00:00:00Z", from_ms=int(start * 1000),
                    to_date="2024-07-15T00:00:00Z", to_ms=int(end * 1000))
        self.assertIsNone(self.deliver(incoming(), sender="a@example.org", now=start - 1))
        self.assertEqual(self.deliver(incoming(), sender="b@example.org", now=start), "q1")
        self.assertEqual(self.deliver(incoming(), sender="c@example.org", now=end - 1), "q2")
        self.assertIsNone(self.deliver(incoming(), sender="d@example.org", now=end))
        self.enable(is_enabled=False)
        self.assertIsNone(self.deliver(incoming(), sender="e@example.org", now=start + 1))

    def test_noRelay(self) -> None:
        """
        Without smtp-relay-host nothing can be sent: no reply is queued,
        and the sender is not counted as answered.
        """
        parsed = incoming()
        result = self.database.run_sync(after_delivery, self.env, self.alice, "bob@example.org", parsed, JULY,
                                        write=True)
        self.assertIsNone(result)
        self.assertIsNone(self.database.run_sync(storage.last_reply, self.alice, "bob@example.org"))

    def test_whyNot(self) -> None:
        """
        L{why_not} names the RFC 3834 reason, or None for a personal
        message.
        """
        fields = {"precedence": ["bulk"]}
        self.assertEqual(why_not(fields, "bob@example.org"), "Precedence")
        self.assertEqual(why_not({}, ""), "null sender")
        self.assertIsNone(why_not({"subject": ["hi"]}, "bob@example.org"))

    def test_referencesFromInReplyTo(self) -> None:
        """
        When the original has no References but an In-Reply-To with one
        message id, the reply's References are that id and the original's
        Message-ID (RFC 5322 section 3.6.4), so the thread is kept.
        """
        parsed = parse_message(
            b"From: bob@example.org\r\nTo: alice@example.com\r\nMessage-ID: <m1@example.org>\r\n"
            b"In-Reply-To: <m0@example.org>\r\n\r\nHi\r\n"
        )
        raw = build_reply(storage.Vacation(is_enabled=True), "alice@example.com", "bob@example.org", parsed, JULY)
        reply = email.message_from_bytes(raw, policy=email.policy.default)
        self.assertEqual(reply["In-Reply-To"], "<m1@example.org>")
        self.assertEqual(reply["References"], "<m0@example.org> <m1@example.org>")

    def test_buildReplyWithoutMessageId(self) -> None:
        """
        A message without Message-ID gets a reply without In-Reply-To.
        """
        parsed = parse_message(b"From: bob@example.org\r\nTo: alice@example.com\r\n\r\nHi\r\n")
        raw = build_reply(storage.Vacation(is_enabled=True), "alice@example.com", "bob@example.org", parsed, JULY)
        reply = email.message_from_bytes(raw, policy=email.policy.default)
        self.assertIsNone(reply["In-Reply-To"])
        self.assertEqual(reply["Subject"], "Auto: (no subject)")


class DeliveryReplyTests(LMTPTestCase):
    """
    LMTP delivery queues the vacation reply through the relay's queue.
    """

    def test_queuedThroughRelay(self) -> Any:
        """
        With smtp-relay-host set and the VacationResponse on, a delivery
        puts one reply in the outgoing queue (from <> to the sender), and a
        second delivery from the same sender puts none.
        """

        async def run() -> None:
            server, _, port = await self.start_lmtp(smtp_relay_host="127.0.0.1", smtp_relay_port=9)
            alice = server.add_account("alice", ("alice@example.com",))
            server.env.database.run_sync(
                storage.set_vacation, alice, storage.Vacation(is_enabled=True, text_body="Away."), write=True
            )

            def deliver() -> None:
                client = self.connect(port)
                client.ehlo()
                for _ in range(2):
                    refused = client.sendmail(
                        "bob@example.org", ["alice@example.com"],
                        b"From: bob@example.org\r\nTo: alice@example.com\r\nSubject: x\r\n\r\nHi\r\n",
                    )
                    self.assertEqual(refused, {})
                client.quit()

            await self.in_thread(deliver)
            rows = server.env.database.run_sync(
                lambda txn: txn.fetchall("SELECT account_id, mail_from, recipients, message FROM outgoing_queue")
            )
            self.assertEqual(len(rows), 1)
            account_id, mail_from, rcpt_to, raw = rows[0]
            self.assertEqual((account_id, mail_from), (alice, ""))
            self.assertIn("bob@example.org", rcpt_to)
            self.assertIn(b"Auto-Submitted: auto-replied", bytes(raw))

        return ensureDeferred(run())


pg.add_postgresql_variants(globals(), VacationResponseMethodTests, AutoReplyTests, DeliveryReplyTests)
