"""
End-to-end tests of sending: a real jmapd over HTTP, EmailSubmission/set,
the queue service on a L{task.Clock}, and a real SMTP relay (Twisted's
ESMTP server) that records what it receives.
"""

from __future__ import annotations

import os
from typing import Any

from twisted.internet.defer import ensureDeferred

from jmapd.submission import SUBMISSION
from tests.submission.support import USING, RecordingRelay, replace_queue, start_sending_server
from tests.support import ServerTestCase


class SendingTestCase(ServerTestCase):
    """
    Helpers to draft and send over the API.
    """

    async def setup_server(self, relay: RecordingRelay, **config: Any) -> None:
        self.server, self.clock, self.queue = await start_sending_server(self, relay, **config)
        self.account = self.server.add_account("alice", ("alice@example.com",))

    async def call(self, name: str, arguments: dict[str, Any]) -> list[Any]:
        response = await self.server.api([[name, {"accountId": self.account, **arguments}, "0"]], using=USING)
        return response["methodResponses"]  # type: ignore[no-any-return]

    async def mailbox(self, role: str) -> str:
        [[_, response, _]] = await self.call("Mailbox/get", {"ids": None, "properties": ["role"]})
        return next(m["id"] for m in response["list"] if m["role"] == role)

    async def send(self, on_success: bool = True, **fields: Any) -> tuple[str, str]:
        """
        Draft an Email (alice to bob, Bcc carol) and submit it, moving it
        to Sent on success; returns (submission id, email id).
        """
        drafts = await self.mailbox("drafts")
        sent = await self.mailbox("sent")
        [[_, identities, _]] = await self.call("Identity/get", {"ids": None})
        identity_id = identities["list"][0]["id"]
        draft = {
            "mailboxIds": {drafts: True},
            "keywords": {"$draft": True},
            "from": [{"name": "Alice", "email": "alice@example.com"}],
            "to": [{"name": "Bob", "email": "bob@example.org"}],
            "bcc": [{"email": "carol@example.net"}],
            "subject": "Lunch?",
            "bodyValues": {"b": {"value": "Noon at the usual place.\n.\nBye"}},
            "textBody": [{"partId": "b", "type": "text/plain"}],
        }
        draft.update(fields)
        arguments: dict[str, Any] = {
            "accountId": self.account,
            "create": {"s": {"identityId": identity_id, "emailId": "#d"}},
        }
        if on_success:
            arguments["onSuccessUpdateEmail"] = {
                "#s": {f"mailboxIds/{drafts}": None, f"mailboxIds/{sent}": True,
                       "keywords/$draft": None, "keywords/$seen": True}
            }
        response = await self.server.api(
            [["Email/set", {"accountId": self.account, "create": {"d": draft}}, "0"],
             ["EmailSubmission/set", arguments, "1"]],
            using=USING,
        )
        responses = response["methodResponses"]
        created = responses[1][1]["created"]
        assert created, responses
        return created["s"]["id"], responses[0][1]["created"]["d"]["id"]

    async def submission(self, submission_id: str) -> dict[str, Any]:
        [[_, response, _]] = await self.call("EmailSubmission/get", {"ids": [submission_id]})
        return response["list"][0]  # type: ignore[no-any-return]


class SendTests(SendingTestCase):
    """
    A submission goes out through the relay.
    """

    def test_send(self) -> None:
        """
        EmailSubmission/set with onSuccessUpdateEmail: the Email moves to
        Sent with $seen; the relay receives the message with the derived
        envelope (Bcc recipients included) and without the Bcc header; the
        deliveryStatus records the relay's answers and undoStatus becomes
        final; EmailSubmission/changes reports the update.
        """
        relay = RecordingRelay(self)
        relay.start()

        async def go() -> None:
            await self.setup_server(relay)
            submission_id, email_id = await self.send()
            [[_, state, _]] = await self.call("EmailSubmission/get", {"ids": []})
            await self.queue.when_idle()
            [received] = relay.received
            self.assertEqual(received.mail_from, "alice@example.com")
            self.assertEqual(received.rcpt_to, ["bob@example.org", "carol@example.net"])
            self.assertNotIn(b"carol", received.data)
            self.assertIn(b"Subject: Lunch?", received.data)
            self.assertIn(b"\r\n.\r\n", received.data)
            submission = await self.submission(submission_id)
            self.assertEqual(submission["undoStatus"], "final")
            for address in ("bob@example.org", "carol@example.net"):
                status = submission["deliveryStatus"][address]
                self.assertEqual(status["delivered"], "unknown")
                self.assertEqual(status["displayed"], "unknown")
                self.assertTrue(status["smtpReply"].startswith("250 "), status)
            [[_, changes, _]] = await self.call("EmailSubmission/changes", {"sinceState": state["state"]})
            self.assertEqual(changes["updated"], [submission_id])
            [[_, emails, _]] = await self.call("Email/get", {"ids": [email_id], "properties": ["mailboxIds", "keywords"]})
            sent = await self.mailbox("sent")
            self.assertEqual(emails["list"][0]["mailboxIds"], {sent: True})
            self.assertEqual(emails["list"][0]["keywords"], {"$seen": True})
            self.assertEqual(self.queue_length(), 0)

        return ensureDeferred(go())

    def queue_length(self) -> int:
        from jmapd.storage import submissions

        return int(self.server.env.database.run_sync(submissions.queue_length))

    def test_temporaryFailureRetried(self) -> None:
        """
        A relay that answers 451 the first time keeps the message queued
        (delivered queued, the 451 as smtpReply, undoStatus pending); the
        retry comes after the backoff, not before, and then it is sent.
        """
        relay = RecordingRelay(self)
        relay.start()
        relay.rcpt_reply = lambda address, session: (451, "4.3.0 Try again later") if session == 1 else None

        async def go() -> None:
            await self.setup_server(relay)
            submission_id, _ = await self.send(on_success=False)
            await self.queue.when_idle()
            self.assertEqual(relay.received, [])
            submission = await self.submission(submission_id)
            self.assertEqual(submission["undoStatus"], "pending")
            self.assertEqual(
                submission["deliveryStatus"]["bob@example.org"],
                {"smtpReply": "451 4.3.0 Try again later", "delivered": "queued", "displayed": "unknown"},
            )
            self.clock.advance(59)
            await self.queue.when_idle()
            self.assertEqual(relay.sessions_count, 1)
            self.clock.advance(1)
            await self.queue.when_idle()
            self.assertEqual(relay.sessions_count, 2)
            [received] = relay.received
            self.assertEqual(received.rcpt_to, ["bob@example.org", "carol@example.net"])
            submission = await self.submission(submission_id)
            self.assertEqual(submission["undoStatus"], "final")
            self.assertEqual(submission["deliveryStatus"]["bob@example.org"]["delivered"], "unknown")

        return ensureDeferred(go())

    def test_backoffDoubles(self) -> None:
        """
        Each further temporary failure waits twice as long as the one
        before (60 s, then 120 s).
        """
        relay = RecordingRelay(self)
        relay.start()
        relay.rcpt_reply = lambda address, session: (421, "4.4.5 Busy") if session <= 2 else None

        async def go() -> None:
            await self.setup_server(relay)
            await self.send(on_success=False)
            await self.queue.when_idle()
            self.clock.advance(60)
            await self.queue.when_idle()
            self.assertEqual(relay.sessions_count, 2)
            self.clock.advance(119)
            await self.queue.when_idle()
            self.assertEqual(relay.sessions_count, 2)
            self.clock.advance(1)
            await self.queue.when_idle()
            self.assertEqual(relay.sessions_count, 3)
            self.assertEqual(len(relay.received), 1)

        return ensureDeferred(go())

    def test_permanentFailure(self) -> None:
        """
        A recipient the relay refuses with 5xx is recorded as delivered
        no with the relay's reply and is not retried; the others are sent.
        """
        relay = RecordingRelay(self)
        relay.start()
        relay.rcpt_reply = lambda address, session: (
            (550, "5.1.1 <bob@example.org>: Recipient address rejected") if address == "bob@example.org" else None
        )

        async def go() -> None:
            await self.setup_server(relay)
            submission_id, _ = await self.send(on_success=False)
            await self.queue.when_idle()
            submission = await self.submission(submission_id)
            self.assertEqual(
                submission["deliveryStatus"]["bob@example.org"],
                {
                    "smtpReply": "550 5.1.1 <bob@example.org>: Recipient address rejected",
                    "delivered": "no",
                    "displayed": "unknown",
                },
            )
            self.assertEqual(submission["deliveryStatus"]["carol@example.net"]["delivered"], "unknown")
            self.assertEqual(submission["undoStatus"], "final")
            self.clock.advance(86400)
            await self.queue.when_idle()
            self.assertEqual(relay.sessions_count, 1)

        return ensureDeferred(go())

    def test_allRefused(self) -> None:
        """
        When the relay refuses every recipient for good, the queue is done
        with the message and undoStatus is final.
        """
        relay = RecordingRelay(self)
        relay.start()
        relay.rcpt_reply = lambda address, session: (554, "5.7.1 Relay access denied")

        async def go() -> None:
            await self.setup_server(relay)
            submission_id, _ = await self.send(on_success=False)
            await self.queue.when_idle()
            submission = await self.submission(submission_id)
            self.assertEqual({s["delivered"] for s in submission["deliveryStatus"].values()}, {"no"})
            self.assertEqual(submission["undoStatus"], "final")
            self.assertEqual(self.queue_length(), 0)

        return ensureDeferred(go())

    def test_starttlsAndAuth(self) -> None:
        """
        Through a relay that offers STARTTLS and requires AUTH, with
        smtp-relay-tls starttls and smtp-relay-auth/-secret, the message
        arrives over TLS from the authenticated user.
        """
        relay = RecordingRelay(self, users={"jmapd": "relay-pw"}, tls="starttls")
        relay.start()

        async def go() -> None:
            await self.setup_server(relay, smtp_relay_tls="starttls", smtp_relay_auth="jmapd",
                                    smtp_relay_secret="relay-pw", smtp_relay_ca_path=relay.cert_path)
            # The server's own relay client, from the configuration.
            from jmapd.submission.relay import Relay

            self.queue.stopService()
            self.queue.disownServiceParent()
            self.queue = replace_queue(self, self.server, self.clock,
                                       Relay.from_config(self.server.env.config, self.server.service.reactor))
            submission_id, _ = await self.send(on_success=False)
            await self.queue.when_idle()
            [received] = relay.received
            self.assertTrue(received.tls)
            self.assertEqual(received.user, "jmapd")
            submission = await self.submission(submission_id)
            self.assertEqual(submission["undoStatus"], "final")

        return ensureDeferred(go())

    def test_capabilityAdvertised(self) -> None:
        """
        With smtp-relay-host set, the Session lists the submission
        capability, with maxDelayedSend, for the account.
        """
        relay = RecordingRelay(self)
        relay.start()

        async def go() -> None:
            await self.setup_server(relay, submission_max_delayed_send=7200.0)
            response, body = await self.server.request("GET", "/.well-known/jmap")
            import orjson

            session = orjson.loads(body)
            self.assertEqual(session["capabilities"][SUBMISSION], {})
            value = session["accounts"][self.account]["accountCapabilities"][SUBMISSION]
            self.assertEqual(value["maxDelayedSend"], 7200)
            self.assertEqual(session["primaryAccounts"][SUBMISSION], self.account)

        return ensureDeferred(go())


class HoldAndRestartTests(SendingTestCase):
    """
    submission-hold, undo, and a queue that outlives the service.
    """

    def test_undoDuringHold(self) -> None:
        """
        With submission-hold, a submission canceled during the hold is
        never relayed.
        """
        relay = RecordingRelay(self)
        relay.start()

        async def go() -> None:
            await self.setup_server(relay, submission_hold=30.0)
            submission_id, _ = await self.send(on_success=False)
            await self.queue.when_idle()
            self.assertEqual((await self.submission(submission_id))["undoStatus"], "pending")
            [[_, response, _]] = await self.call(
                "EmailSubmission/set", {"update": {submission_id: {"undoStatus": "canceled"}}}
            )
            self.assertEqual(
                [status["delivered"] for status in response["updated"][submission_id]["deliveryStatus"].values()],
                ["no", "no"],
            )
            self.clock.advance(300)
            await self.queue.when_idle()
            self.assertEqual(relay.sessions_count, 0)
            self.assertEqual((await self.submission(submission_id))["undoStatus"], "canceled")

        return ensureDeferred(go())

    def test_sentAfterHoldThenCannotUnsend(self) -> None:
        """
        Without an undo, the message leaves when the hold is over, not
        before; then a cancel is cannotUnsend.
        """
        relay = RecordingRelay(self)
        relay.start()

        async def go() -> None:
            await self.setup_server(relay, submission_hold=30.0)
            submission_id, _ = await self.send(on_success=False)
            self.clock.advance(29)
            await self.queue.when_idle()
            self.assertEqual(relay.sessions_count, 0)
            self.clock.advance(1)
            await self.queue.when_idle()
            self.assertEqual(len(relay.received), 1)
            [[_, response, _]] = await self.call(
                "EmailSubmission/set", {"update": {submission_id: {"undoStatus": "canceled"}}}
            )
            self.assertEqual(response["notUpdated"][submission_id]["type"], "cannotUnsend")

        return ensureDeferred(go())

    def test_futureRelease(self) -> None:
        """
        HOLDFOR in the envelope delays the send to sendAt.
        """
        relay = RecordingRelay(self)
        relay.start()

        async def go() -> None:
            await self.setup_server(relay)
            drafts = await self.mailbox("drafts")
            [[_, identities, _]] = await self.call("Identity/get", {"ids": None})
            envelope = {
                "mailFrom": {"email": "alice@example.com", "parameters": {"HOLDFOR": "3600"}},
                "rcptTo": [{"email": "bob@example.org", "parameters": None}],
            }
            draft = {"mailboxIds": {drafts: True}, "from": [{"email": "alice@example.com"}], "subject": "later"}
            await self.server.api(
                [["Email/set", {"accountId": self.account, "create": {"d": draft}}, "0"],
                 ["EmailSubmission/set", {"accountId": self.account, "create": {"s": {
                     "identityId": identities["list"][0]["id"], "emailId": "#d", "envelope": envelope}}}, "1"]],
                using=USING,
            )
            await self.queue.when_idle()
            self.clock.advance(3599)
            await self.queue.when_idle()
            self.assertEqual(relay.sessions_count, 0)
            self.clock.advance(1)
            await self.queue.when_idle()
            self.assertEqual([r.rcpt_to for r in relay.received], [["bob@example.org"]])

        return ensureDeferred(go())

    def test_queueSurvivesRestart(self) -> None:
        """
        A message still held when the service stops is sent by a new
        service on the same data directory.
        """
        relay = RecordingRelay(self)
        relay.start()

        async def go() -> None:
            data = os.path.abspath(self.mktemp())
            await self.setup_server(relay, submission_hold=3600.0, db_path=data)
            submission_id, _ = await self.send(on_success=False)
            await self.queue.when_idle()
            await self.server.service.stopService()
            self.assertEqual(relay.sessions_count, 0)
            self.server, self.clock, self.queue = await start_sending_server(
                self, relay, submission_hold=3600.0, db_path=data
            )
            self.clock.advance(3600)
            await self.queue.when_idle()
            [received] = relay.received
            self.assertIn(b"Subject: Lunch?", received.data)
            submission = await self.submission(submission_id)
            self.assertEqual(submission["undoStatus"], "final")

        return ensureDeferred(go())
