"""
Tests for L{jmapd.submission.relay}: the SMTP client against a real
Twisted ESMTP server, and the message transformations it relies on.
"""

from __future__ import annotations

from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import ensureDeferred
from twisted.trial.unittest import SynchronousTestCase, TestCase

from jmapd.config import default_config
from jmapd.submission.relay import Relay, helo_name, one_line, strip_bcc, wire_format
from tests.submission.support import RecordingRelay

MESSAGE = (
    b"From: alice@example.com\r\n"
    b"To: bob@example.org\r\n"
    b"Subject: hello\r\n"
    b"\r\n"
    b"Hello Bob,\r\n"
    b".a line that starts with a dot\r\n"
    b"..and one with two\r\n"
)


class FormatTests(SynchronousTestCase):
    """
    The octets put on the wire and the replies reported back.
    """

    def test_wireFormatLineEnds(self) -> None:
        """
        Bare LF and bare CR line ends become CRLF, and a message without a
        final line end gets one, so the terminating dot is on its own line.
        """
        self.assertEqual(wire_format(b"a\nb\rc\r\nd"), b"a\r\nb\r\nc\r\nd\r\n")

    def test_wireFormatDotStuffing(self) -> None:
        """
        Every line that starts with a dot gets another one (RFC 5321
        section 4.5.2), including the first line.
        """
        self.assertEqual(wire_format(b".x\r\ny\r\n..z\r\n."), b"..x\r\ny\r\n...z\r\n..\r\n")

    def test_stripBcc(self) -> None:
        """
        Bcc header fields go, with their continuation lines, whatever their
        case; other fields and the body (even a body line that looks like a
        Bcc field) stay as they were.
        """
        message = (
            b"From: a@example.com\r\nBCC: secret@example.com,\r\n  other@example.com\r\n"
            b"To: b@example.com\r\nbcc: x@example.com\r\n\r\nBcc: not a header\r\n"
        )
        self.assertEqual(
            strip_bcc(message), b"From: a@example.com\r\nTo: b@example.com\r\n\r\nBcc: not a header\r\n"
        )

    def test_stripBccLastField(self) -> None:
        """
        A Bcc field right before the body leaves exactly one empty line
        between header and body.
        """
        self.assertEqual(strip_bcc(b"To: b@x.org\nBcc: c@x.org\n\nbody\n"), b"To: b@x.org\n\nbody\n")

    def test_oneLine(self) -> None:
        """
        A multi-line reply becomes one line as RFC 8621 section 7 shows:
        the code once and the enhanced status code of later lines dropped.
        """
        self.assertEqual(
            one_line(550, b"5.7.1 Our system has detected that this message is\n5.7.1 likely spam."),
            "550 5.7.1 Our system has detected that this message is likely spam.",
        )

    def test_heloName(self) -> None:
        """
        EHLO gives the host of jmap-url; an IP address as an address
        literal.
        """
        self.assertEqual(helo_name(default_config(jmap_url="https://mail.example.com")), "mail.example.com")
        self.assertEqual(helo_name(default_config(jmap_url="http://127.0.0.1:8080")), "[127.0.0.1]")

    def test_secretFile(self) -> None:
        """
        Without smtp-relay-secret, the password is the first line of
        smtp-relay-secret-file.
        """
        path = self.mktemp()
        with open(path, "w") as f:
            f.write("s3cret\nignored\n")
        config = default_config(
            smtp_relay_host="relay.example.com", smtp_relay_auth="jmapd", smtp_relay_secret_file=path
        )
        relay = Relay.from_config(config, reactor)
        self.assertEqual((relay.username, relay.secret, relay.port, relay.tls), ("jmapd", "s3cret", 587, "starttls"))


class RelayTests(TestCase):
    """
    Relay.send against a real ESMTP server.
    """

    async def _send(self, server: RecordingRelay, relay: Relay | None = None, recipients: Any = None,
                    message: bytes = MESSAGE) -> dict[str, Any]:
        relay = relay or server.relay_for()
        replies = await relay.send("alice@example.com", recipients or ["bob@example.org"], message)
        return {address: (reply.code, reply.text) for address, reply in replies.items()}

    def test_send(self) -> None:
        """
        The relay receives the envelope and the message unchanged (dots
        unstuffed again by the server), and the recipient's reply is the
        relay's answer to RCPT TO.
        """
        server = RecordingRelay(self)
        server.start()

        async def go() -> None:
            replies = await self._send(server)
            self.assertEqual(replies["bob@example.org"][0], 250)
            [received] = server.received
            self.assertEqual(received.mail_from, "alice@example.com")
            self.assertEqual(received.rcpt_to, ["bob@example.org"])
            self.assertEqual(received.data, MESSAGE)
            self.assertEqual(received.helo, b"jmapd.test")
            self.assertFalse(received.tls)

        return ensureDeferred(go())

    def test_perRecipientReplies(self) -> None:
        """
        A recipient the relay refuses gets that refusal; the others are
        sent the message and get their acceptance.
        """
        server = RecordingRelay(self)
        server.start()
        server.rcpt_reply = lambda address, session: (
            (550, "5.1.1 No such user") if address.startswith("nobody") else None
        )

        async def go() -> None:
            replies = await self._send(server, recipients=["bob@example.org", "nobody@example.org"])
            self.assertEqual(replies["nobody@example.org"], (550, "550 5.1.1 No such user"))
            self.assertEqual(replies["bob@example.org"][0], 250)
            self.assertEqual(server.received[0].rcpt_to, ["bob@example.org"])

        return ensureDeferred(go())

    def test_dataRefused(self) -> None:
        """
        When the relay accepts the recipients but refuses the message at
        the end of DATA, every accepted recipient gets the DATA reply.
        """
        server = RecordingRelay(self)
        server.start()
        server.data_reply = (554, "5.6.0 Message content rejected")

        async def go() -> None:
            replies = await self._send(server, recipients=["bob@example.org", "carol@example.org"])
            self.assertEqual(
                replies,
                {
                    "bob@example.org": (554, "554 5.6.0 Message content rejected"),
                    "carol@example.org": (554, "554 5.6.0 Message content rejected"),
                },
            )

        return ensureDeferred(go())

    def test_mailFromRefused(self) -> None:
        """
        A refused MAIL FROM is every recipient's reply.
        """
        server = RecordingRelay(self)
        server.start()
        server.mail_from_reply = lambda address: (553, "5.7.1 Sender not allowed")

        async def go() -> None:
            replies = await self._send(server, recipients=["bob@example.org", "carol@example.org"])
            [(code, text)] = set(replies.values())
            self.assertEqual(code, 553)
            self.assertTrue(text.startswith("553 ") and text.endswith("5.7.1 Sender not allowed"), text)
            self.assertEqual(server.received, [])

        return ensureDeferred(go())

    def test_cannotConnect(self) -> None:
        """
        A relay that cannot be reached is a temporary failure for every
        recipient, in the synthetic smtpReply form of RFC 8621.
        """
        server = RecordingRelay(self)
        port = server.start()

        async def go() -> None:
            await server.port.stopListening()
            relay = Relay(reactor, "127.0.0.1", port, tls="none", timeout=5.0)
            replies = await self._send(server, relay=relay)
            code, text = replies["bob@example.org"]
            self.assertEqual(code, 451)
            self.assertTrue(text.startswith("451 4.4.1 cannot connect to the relay"), text)

        return ensureDeferred(go())

    def test_starttlsAndAuth(self) -> None:
        """
        With smtp-relay-tls starttls and a user name, the session is
        secured with STARTTLS (verifying the relay's certificate) and then
        authenticated before the message is sent.
        """
        server = RecordingRelay(self, users={"jmapd": "pw"}, tls="starttls")
        server.start()

        async def go() -> None:
            relay = server.relay_for(username="jmapd", secret="pw")
            replies = await self._send(server, relay=relay)
            self.assertEqual(replies["bob@example.org"][0], 250)
            [received] = server.received
            self.assertTrue(received.tls)
            self.assertEqual(received.user, "jmapd")
            self.assertEqual(received.data, MESSAGE)
            commands = server.sessions[0].commands
            self.assertLess(commands.index(b"STARTTLS"), commands.index(b"AUTH"))

        return ensureDeferred(go())

    def test_wrongPassword(self) -> None:
        """
        Credentials the relay refuses are a temporary failure (the operator
        can fix them), and nothing is sent.
        """
        server = RecordingRelay(self, users={"jmapd": "pw"}, tls="starttls")
        server.start()

        async def go() -> None:
            relay = server.relay_for(username="jmapd", secret="wrong")
            replies = await self._send(server, relay=relay)
            code, text = replies["bob@example.org"]
            self.assertEqual(code, 451)
            self.assertIn("535", text)
            self.assertEqual(server.received, [])

        return ensureDeferred(go())

    def test_starttlsRequired(self) -> None:
        """
        With smtp-relay-tls starttls, a relay that does not offer STARTTLS
        gets nothing: the message is not sent in plain text.
        """
        server = RecordingRelay(self)
        server.start()

        async def go() -> None:
            relay = server.relay_for(tls="starttls")
            replies = await self._send(server, relay=relay)
            self.assertEqual(replies["bob@example.org"][0], 451)
            self.assertEqual(server.received, [])
            self.assertNotIn(b"MAIL", server.sessions[0].commands)

        return ensureDeferred(go())

    def test_untrustedCertificate(self) -> None:
        """
        A relay whose certificate is not trusted gets nothing.
        """
        server = RecordingRelay(self, tls="starttls")
        server.start()

        async def go() -> None:
            relay = server.relay_for(trust_root=None)
            replies = await self._send(server, relay=relay)
            self.assertEqual(replies["bob@example.org"][0], 451)
            self.assertEqual(server.received, [])

        return ensureDeferred(go())

    def test_implicitTLS(self) -> None:
        """
        With smtp-relay-tls tls, the session is TLS from the first byte,
        with authentication.
        """
        server = RecordingRelay(self, users={"jmapd": "pw"}, tls="tls")
        server.start()

        async def go() -> None:
            relay = server.relay_for(username="jmapd", secret="pw")
            replies = await self._send(server, relay=relay)
            self.assertEqual(replies["bob@example.org"][0], 250)
            [received] = server.received
            self.assertTrue(received.tls)
            self.assertEqual(received.user, "jmapd")
            self.assertNotIn(b"STARTTLS", server.sessions[0].commands)

        return ensureDeferred(go())
