"""
Tests for L{jmapd.mail.reports}: DSNs (RFC 3464) and MDNs (RFC 8098)
delivered over LMTP are recorded on the EmailSubmission they report on
(RFC 8621 section 7), through a real jmapd, a real SMTP relay and a real
LMTP client.
"""

from __future__ import annotations

from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import ensureDeferred
from twisted.trial.unittest import SynchronousTestCase

from jmapd.ingest.service import LMTPService
from jmapd.mail import reports
from jmapd.mail.reports import DSN, MDN, RecipientReport, Report, read_report
from jmapd.mime.parse import parse_message
from tests import pg
from tests.ingest.support import LMTPTestCase
from tests.submission.support import RecordingRelay
from tests.submission.test_sending import SendingTestCase


def dsn(
    message_id: str,
    recipients: list[dict[str, str]],
    returned: str = "text/rfc822-headers",
    report_type: str = "delivery-status",
    status_type: str = "message/delivery-status",
) -> bytes:
    """
    A DSN as an MTA writes it: a human-readable part, the
    message/delivery-status part with one block per recipient (the
    fields given, in order), and the returned header fields.
    """
    blocks = "".join(
        "\r\n" + "".join(f"{name}: {value}\r\n" for name, value in fields.items()) for fields in recipients
    )
    text = (
        "From: Mail Delivery System <MAILER-DAEMON@relay.test>\r\n"
        "To: alice@example.com\r\n"
        "Subject: Undelivered Mail Returned to Sender\r\n"
        "Message-ID: <dsn-" + str(abs(hash((message_id, repr(recipients))))) + "@relay.test>\r\n"
        "MIME-Version: 1.0\r\n"
        f'Content-Type: multipart/report; report-type={report_type};\r\n\tboundary="BOUNDARY"\r\n'
        "\r\n"
        "--BOUNDARY\r\n"
        "Content-Type: text/plain\r\n"
        "\r\n"
        "This is the mail system at host relay.test.\r\n"
        "\r\n"
        "--BOUNDARY\r\n"
        f"Content-Type: {status_type}\r\n"
        "\r\n"
        "Reporting-MTA: dns; relay.test\r\n"
        "Arrival-Date: Mon, 6 Jul 2026 10:00:00 +0000\r\n"
        f"{blocks}"
        "\r\n"
        "--BOUNDARY\r\n"
        f"Content-Type: {returned}\r\n"
        "\r\n"
        "From: Alice <alice@example.com>\r\n"
        "To: Bob <bob@example.org>\r\n"
        "Subject: Lunch?\r\n"
        f"Message-ID: <{message_id}>\r\n"
        "\r\n"
        "--BOUNDARY--\r\n"
    )
    return text.encode()


def mdn(message_id: str, final_recipient: str, disposition: str = "displayed") -> bytes:
    """
    An MDN as a mail client writes it (RFC 8098 section 3).
    """
    text = (
        "From: Bob <bob@example.org>\r\n"
        "To: alice@example.com\r\n"
        "Subject: Read: Lunch?\r\n"
        "Message-ID: <mdn-" + str(abs(hash((message_id, final_recipient, disposition)))) + "@example.org>\r\n"
        f"References: <{message_id}>\r\n"
        "MIME-Version: 1.0\r\n"
        'Content-Type: multipart/report; report-type=disposition-notification; boundary="B"\r\n'
        "\r\n"
        "--B\r\n"
        "Content-Type: text/plain\r\n"
        "\r\n"
        "Your message was displayed.\r\n"
        "--B\r\n"
        "Content-Type: message/disposition-notification\r\n"
        "\r\n"
        "Reporting-UA: mua.example.org; Test Mail 1.0\r\n"
        f"Final-Recipient: rfc822; {final_recipient}\r\n"
        f"Original-Message-ID: <{message_id}>\r\n"
        f"Disposition: manual-action/MDN-sent-manually; {disposition}\r\n"
        "--B--\r\n"
    )
    return text.encode()


def failed(address: str, diagnostic: str = "smtp; 550 5.1.1 <bob@example.org>: Recipient address rejected",
           **more: str) -> dict[str, str]:
    return {"Final-Recipient": f"rfc822; {address}", "Action": "failed", "Status": "5.1.1",
            "Diagnostic-Code": diagnostic, **more}


def delivered(address: str, **more: str) -> dict[str, str]:
    return {"Final-Recipient": f"rfc822; {address}", "Action": "delivered", "Status": "2.0.0", **more}


class ReadReportTests(SynchronousTestCase):
    """
    L{read_report} reads what a DSN or MDN says from the parse delivery
    made, and nothing from anything else.
    """

    def read(self, raw: bytes, mail_from: str = "") -> Report | None:
        return read_report(raw, parse_message(raw), mail_from)

    def test_dsn(self) -> None:
        """
        A DSN gives the Message-ID of the returned header fields and one
        RecipientReport per per-recipient block, with Original-Recipient
        and Final-Recipient lower-cased and the smtp Diagnostic-Code as an
        smtpReply; the per-message block gives none.
        """
        raw = dsn("m1@example.com", [
            failed("Bob@Example.org"),
            delivered("carol@relay.example.net", **{"Original-Recipient": "rfc822;Carol@example.net"}),
            {"Final-Recipient": "rfc822; dan@example.org", "Action": "delayed (still trying)", "Status": "4.4.1"},
        ])
        self.assertEqual(self.read(raw), Report(DSN, "m1@example.com", (
            RecipientReport(None, "bob@example.org", "failed", "550 5.1.1 <bob@example.org>: Recipient address rejected"),
            RecipientReport("carol@example.net", "carol@relay.example.net", "delivered", None),
            RecipientReport(None, "dan@example.org", "delayed", None),
        )))

    def test_dsnReturnedMessage(self) -> None:
        """
        The Message-ID may come from a returned message/rfc822 part, and
        the report from a message/global-delivery-status part (RFC 6533).
        """
        raw = dsn("m2@example.com", [failed("bob@example.org")], returned="message/rfc822",
                  status_type="message/global-delivery-status")
        report = self.read(raw)
        assert report is not None
        self.assertEqual((report.kind, report.original_message_id), (DSN, "m2@example.com"))

    def test_multiLineDiagnostic(self) -> None:
        """
        A multi-line SMTP reply in Diagnostic-Code becomes one line as RFC
        8621 section 7 says: the shared prefix once, the hyphen a space.
        """
        raw = dsn("m3@example.com", [failed(
            "bob@example.org",
            "smtp; 550-5.7.1 Our system has detected that this message is\r\n    550 5.7.1 likely spam.",
        )])
        report = self.read(raw)
        assert report is not None
        self.assertEqual(
            report.recipients[0].smtp_reply, "550 5.7.1 Our system has detected that this message is likely spam."
        )

    def test_otherDiagnosticType(self) -> None:
        """
        A Diagnostic-Code of another type than smtp gives no smtpReply.
        """
        raw = dsn("m4@example.com", [failed("bob@example.org", "X-Postfix; host unreachable")])
        report = self.read(raw)
        assert report is not None
        self.assertIsNone(report.recipients[0].smtp_reply)

    def test_mdn(self) -> None:
        """
        An MDN gives its Original-Message-ID and one RecipientReport whose
        action is the disposition-type.
        """
        raw = mdn("m5@example.com", "Bob@example.org")
        self.assertEqual(
            self.read(raw, "bob@example.org"),
            Report(MDN, "m5@example.com", (RecipientReport(None, "bob@example.org", "displayed"),)),
        )

    def test_dsnFromSomeone(self) -> None:
        """
        A delivery-status report whose envelope sender is not null is not
        a DSN (RFC 3461 section 6.2).
        """
        self.assertIsNone(self.read(dsn("m6@example.com", [failed("bob@example.org")]), "bob@example.org"))

    def test_notReports(self) -> None:
        """
        Other report types, a report without its machine-readable part, a
        DSN without the returned header fields, and a message that is not
        multipart/report give no report.
        """
        self.assertIsNone(self.read(dsn("m7@example.com", [failed("bob@example.org")], report_type="feedback-report")))
        self.assertIsNone(self.read(dsn("m7@example.com", [failed("bob@example.org")], status_type="text/plain")))
        self.assertIsNone(self.read(dsn("m7@example.com", [failed("bob@example.org")], returned="text/plain")))
        self.assertIsNone(self.read(b"From: a@example.org\r\nSubject: x\r\n\r\nHello\r\n"))


MALFORMED = [
    # No boundary at all.
    b"From: x@relay.test\r\nContent-Type: multipart/report; report-type=delivery-status\r\n\r\nbroken\r\n",
    # A status part of garbage, no returned part.
    b'Content-Type: multipart/report; report-type=delivery-status; boundary="b"\r\n\r\n'
    b"--b\r\nContent-Type: message/delivery-status\r\n\r\n\x00\xff::\r\n \r\n:\r\n--b--\r\n",
    # Report-type missing; fields without values; an invalid base64 part.
    b'Content-Type: multipart/report; boundary="b"\r\n\r\n--b\r\n'
    b"Content-Type: message/delivery-status\r\nContent-Transfer-Encoding: base64\r\n\r\n!!!\r\n--b--\r\n",
    b'Content-Type: multipart/report; report-type="delivery-status"; boundary="b"\r\n\r\n--b\r\n'
    b"Content-Type: message/delivery-status\r\n\r\nFinal-Recipient:\r\nAction:\r\n\r\n"
    b"Final-Recipient: rfc822\r\nAction: failed\r\n--b\r\nContent-Type: text/rfc822-headers\r\n"
    b"Content-Transfer-Encoding: quoted-printable\r\n\r\nMessage-ID: =\r\n--b--\r\n",
]


class ReportDeliveryTests(SendingTestCase, LMTPTestCase):
    """
    A DSN or MDN delivered over LMTP updates the EmailSubmission it
    reports on, in the filing transaction, and is filed in the Inbox.
    """

    async def setup(self, **config: Any) -> None:
        """
        jmapd sending through a test relay, with LMTP; alice has sent
        one message to bob and (Bcc) carol, which the relay accepted.
        """
        self.relay = RecordingRelay(self)
        self.relay.start()
        await self.setup_server(self.relay, **config)
        self.lmtp = LMTPService(self.server.env, reactor, port=0)
        self.lmtp.setServiceParent(self.server.service)
        self.lmtp_port = (await self.lmtp.listening).getHost().port
        self.submission_id, email_id = await self.send()
        await self.queue.when_idle()
        [[_, got, _]] = await self.call("Email/get", {"ids": [email_id], "properties": ["messageId"]})
        [self.message_id] = got["list"][0]["messageId"]

    async def deliver(self, raw: bytes, mail_from: str = "", to: str = "alice@example.com") -> None:
        def send() -> None:
            client = self.connect(self.lmtp_port)
            client.ehlo()
            refused = client.sendmail(mail_from, [to], raw)
            self.assertEqual(refused, {})
            client.quit()

        await self.in_thread(send)

    async def state(self) -> str:
        [[_, got, _]] = await self.call("EmailSubmission/get", {"ids": []})
        return str(got["state"])

    async def inbox_blob_ids(self, account: str | None = None) -> list[str]:
        account = account or self.account
        inbox = await self.mailbox("inbox") if account == self.account else None
        response = await self.server.api(
            [["Email/query", {"accountId": account, "filter": {"inMailbox": inbox} if inbox else None,
                              "sort": [{"property": "receivedAt", "isAscending": True}]}, "0"],
             ["Email/get", {"accountId": account, "#ids": {"resultOf": "0", "name": "Email/query", "path": "/ids"},
                            "properties": ["blobId"]}, "1"]],
            using=["urn:ietf:params:jmap:core", "urn:ietf:params:jmap:mail"],
            auth="alice" if account == self.account else "mallory",
        )
        return [e["blobId"] for e in response["methodResponses"][1][1]["list"]]

    def test_failedRecipient(self) -> Any:
        """
        A DSN saying delivery to bob failed sets bob's delivered to no,
        with the DSN's SMTP reply as smtpReply, leaves carol's as it was,
        and lists the blobId of the DSN, which is filed in the Inbox, in
        dsnBlobIds; the EmailSubmission state changes and
        EmailSubmission/changes reports it as updated.  The same DSN
        delivered again is listed again, in order of receipt.
        """

        async def go() -> None:
            await self.setup()
            before = await self.state()
            await self.deliver(dsn(self.message_id, [failed("bob@example.org")]))
            [blob_id] = await self.inbox_blob_ids()
            submission = await self.submission(self.submission_id)
            self.assertEqual(submission["deliveryStatus"]["bob@example.org"], {
                "smtpReply": "550 5.1.1 <bob@example.org>: Recipient address rejected",
                "delivered": "no",
                "displayed": "unknown",
            })
            self.assertEqual(submission["deliveryStatus"]["carol@example.net"]["delivered"], "unknown")
            self.assertEqual(submission["dsnBlobIds"], [blob_id])
            self.assertEqual(submission["mdnBlobIds"], [])
            [[_, changes, _]] = await self.call("EmailSubmission/changes", {"sinceState": before})
            self.assertEqual((changes["updated"], changes["created"], changes["destroyed"]),
                             ([self.submission_id], [], []))
            self.assertNotEqual(changes["newState"], before)
            # The same DSN delivered again (an LMTP retry) is another
            # message as received (its own trace fields), filed and listed.
            await self.deliver(dsn(self.message_id, [failed("bob@example.org")]))
            blob_ids = await self.inbox_blob_ids()
            self.assertEqual(len(blob_ids), 2)
            again = await self.submission(self.submission_id)
            self.assertEqual(again["dsnBlobIds"], blob_ids)
            self.assertEqual(again["deliveryStatus"], submission["deliveryStatus"])

        return ensureDeferred(go())

    def test_delivered(self) -> Any:
        """
        A DSN saying delivered sets delivered to yes for the recipient its
        Original-Recipient names (the Final-Recipient may be another
        address after forwarding); a later delayed DSN for the other
        recipient changes no delivered (RFC 8621: only delivered and
        failed do) but is listed in dsnBlobIds, after the first.
        """

        async def go() -> None:
            await self.setup()
            await self.deliver(dsn(self.message_id, [
                delivered("carol@mx.example.net", **{"Original-Recipient": "rfc822; Carol@Example.NET"}),
            ]))
            await self.deliver(dsn(self.message_id, [
                {"Final-Recipient": "rfc822; bob@example.org", "Action": "delayed", "Status": "4.4.1"},
            ]))
            blob_ids = await self.inbox_blob_ids()
            submission = await self.submission(self.submission_id)
            self.assertEqual(submission["deliveryStatus"]["carol@example.net"]["delivered"], "yes")
            self.assertEqual(submission["deliveryStatus"]["bob@example.org"]["delivered"], "unknown")
            self.assertEqual(submission["dsnBlobIds"], blob_ids)
            self.assertEqual(len(blob_ids), 2)

        return ensureDeferred(go())

    def test_mdnDisplayed(self) -> Any:
        """
        An MDN with the disposition-type displayed sets displayed to yes
        for its Final-Recipient and lists its blobId in mdnBlobIds; one
        with another disposition (deleted) is listed but sets nothing.
        """

        async def go() -> None:
            await self.setup()
            before = await self.state()
            await self.deliver(mdn(self.message_id, "bob@example.org"), mail_from="bob@example.org")
            await self.deliver(mdn(self.message_id, "carol@example.net", "deleted"), mail_from="carol@example.net")
            blob_ids = await self.inbox_blob_ids()
            submission = await self.submission(self.submission_id)
            self.assertEqual(submission["deliveryStatus"]["bob@example.org"]["displayed"], "yes")
            self.assertEqual(submission["deliveryStatus"]["bob@example.org"]["delivered"], "unknown")
            self.assertEqual(submission["deliveryStatus"]["carol@example.net"]["displayed"], "unknown")
            self.assertEqual(submission["mdnBlobIds"], blob_ids)
            self.assertEqual(len(blob_ids), 2)
            self.assertEqual(submission["dsnBlobIds"], [])
            [[_, changes, _]] = await self.call("EmailSubmission/changes", {"sinceState": before})
            self.assertEqual(changes["updated"], [self.submission_id])

        return ensureDeferred(go())

    def test_unknownMessageId(self) -> Any:
        """
        A DSN about a message no EmailSubmission sent, or one from a
        non-null envelope sender, is filed and changes nothing: not the
        EmailSubmission, not its state.
        """

        async def go() -> None:
            await self.setup()
            before = await self.state()
            original = await self.submission(self.submission_id)
            await self.deliver(dsn("someone-else@example.com", [failed("bob@example.org")]))
            await self.deliver(dsn(self.message_id, [failed("bob@example.org")]), mail_from="bob@example.org")
            self.assertEqual(len(await self.inbox_blob_ids()), 2)
            self.assertEqual(await self.submission(self.submission_id), original)
            self.assertEqual(await self.state(), before)

        return ensureDeferred(go())

    def test_malformed(self) -> Any:
        """
        Malformed multipart/reports are delivered and filed (and change
        nothing), however broken.
        """

        async def go() -> None:
            await self.setup()
            original = await self.submission(self.submission_id)
            for raw in MALFORMED:
                await self.deliver(raw)
            self.assertEqual(len(await self.inbox_blob_ids()), len(MALFORMED))
            self.assertEqual(await self.submission(self.submission_id), original)

        return ensureDeferred(go())

    def test_otherAccount(self) -> Any:
        """
        A DSN about alice's message delivered to another account, which
        holds a copy of that message (it was one of its recipients), is
        filed there and touches no EmailSubmission of alice's.
        """

        async def go() -> None:
            await self.setup()
            mallory = self.server.add_account("mallory", ("mallory@example.com",))
            before = await self.state()
            original = await self.submission(self.submission_id)
            [sent] = self.relay.received
            await self.deliver(sent.data, mail_from="alice@example.com", to="mallory@example.com")
            await self.deliver(dsn(self.message_id, [failed("bob@example.org")]), to="mallory@example.com")
            self.assertEqual(len(await self.inbox_blob_ids(mallory)), 2)
            self.assertEqual(await self.submission(self.submission_id), original)
            self.assertEqual(await self.state(), before)

        return ensureDeferred(go())

    def test_recordingFails(self) -> Any:
        """
        When recording a report fails, the failure is logged and the
        report is delivered and filed all the same; the EmailSubmission is
        unchanged.
        """

        def broken(*args: Any) -> list[str]:
            raise RuntimeError("broken")

        async def go() -> None:
            await self.setup()
            original = await self.submission(self.submission_id)
            self.patch(reports, "after_delivery", broken)
            await self.deliver(dsn(self.message_id, [failed("bob@example.org")]))
            self.assertEqual(len(await self.inbox_blob_ids()), 1)
            self.assertEqual(await self.submission(self.submission_id), original)
            self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)

        return ensureDeferred(go())

    def test_dsnBeforeRelayRecorded(self) -> Any:
        """
        A DSN filed before the queue records the relay's answer keeps its
        delivered: the relay's acceptance (delivered unknown) does not
        overwrite a DSN's yes.
        """

        async def go() -> None:
            self.relay = RecordingRelay(self)
            self.relay.start()
            await self.setup_server(self.relay, submission_hold=60)
            self.lmtp = LMTPService(self.server.env, reactor, port=0)
            self.lmtp.setServiceParent(self.server.service)
            self.lmtp_port = (await self.lmtp.listening).getHost().port
            self.submission_id, email_id = await self.send(on_success=False)
            [[_, got, _]] = await self.call("Email/get", {"ids": [email_id], "properties": ["messageId"]})
            [message_id] = got["list"][0]["messageId"]
            await self.deliver(dsn(message_id, [delivered("bob@example.org")]))
            self.clock.advance(60)
            await self.queue.when_idle()
            self.assertEqual(len(self.relay.received), 1)
            submission = await self.submission(self.submission_id)
            self.assertEqual(submission["deliveryStatus"]["bob@example.org"]["delivered"], "yes")
            self.assertEqual(submission["deliveryStatus"]["carol@example.net"]["delivered"], "unknown")
            self.assertEqual(submission["undoStatus"], "final")

        return ensureDeferred(go())


pg.add_postgresql_variants(globals(), ReportDeliveryTests)
