"""
Tests for L{jmapd.ingest.lmtp} and L{jmapd.ingest.service}: LMTP delivery
end to end, with a real client on a real socket.
"""

from __future__ import annotations

import contextlib
import os
import smtplib
import socket
import ssl
from collections.abc import Iterator
from typing import Any

import attrs
from twisted.internet import reactor
from twisted.internet.address import IPv4Address
from twisted.internet.defer import ensureDeferred
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport

from jmapd.config import default_config
from jmapd.ingest.lmtp import LMTPFactory, is_trusted
from jmapd.ingest.service import LMTPService, LMTPStartupError, lmtp_service, tls_context
from jmapd.storage import accounts, emails, mailboxes
from tests.ingest.support import LMTPTestCase, message
from tests.test_endpoints import make_certificate, make_chain


class DeliveryTests(LMTPTestCase):
    """
    Messages delivered over LMTP become Emails in the Inbox.
    """

    def test_oneRecipient(self) -> Any:
        """
        A message for one known recipient gets 250 after DATA, and is then
        an Email in the Inbox of that account, unread.
        """

        async def run() -> None:
            server, _, port = await self.start_lmtp()
            alice = server.add_account("alice", ("alice@example.com",))

            def deliver() -> Any:
                client = self.connect(port)
                client.ehlo("mta.example.org")
                self.assertEqual(client.mail("bob@example.org")[0], 250)
                self.assertEqual(client.rcpt("alice@example.com")[0], 250)
                reply = client.data(message())
                client.quit()
                return reply

            code, text = await self.in_thread(deliver)
            self.assertEqual(code, 250)
            self.assertTrue(text.startswith(b"2.0.0 "))

            def check(txn: Any) -> Any:
                inbox = mailboxes.find_by_role(txn, alice, "inbox")
                rows = emails.get_rows(txn, alice, None, ["unread", "subject"])
                ids = [row["id"] for row in rows]
                return inbox, rows, emails.get_mailbox_ids(txn, alice, ids), mailboxes.get_counts(txn, alice, inbox)

            inbox, rows, member_of, counts = server.env.database.run_sync(check)
            self.assertEqual([(row["subject"], row["unread"]) for row in rows], [("Hello", 1)])
            self.assertEqual(member_of[rows[0]["id"]], {inbox: True})
            self.assertEqual(counts, (1, 1, 1, 1))

        return ensureDeferred(run())

    def test_traceFields(self) -> Any:
        """
        The stored message starts with Return-Path (the envelope sender),
        Delivered-To (the recipient as given) and Received, followed by
        the message exactly as sent (dot-unstuffed).
        """

        async def run() -> None:
            server, _, port = await self.start_lmtp()
            alice = server.add_account("alice", ("alice@example.com",))
            sent = message(body="first line\r\n.leading dot\r\n..two dots")

            def deliver() -> None:
                client = self.connect(port)
                client.ehlo("mta.example.org")
                client.sendmail("bob@example.org", ["Alice@Example.com"], sent)
                client.quit()

            await self.in_thread(deliver)
            (stored,) = self.stored(server, alice)
            head, _, rest = stored.partition(b"\r\n\r\n")
            lines = stored.split(b"\r\n")
            self.assertEqual(lines[0], b"Return-Path: <bob@example.org>")
            self.assertEqual(lines[1], b"Delivered-To: Alice@Example.com")
            self.assertTrue(lines[2].startswith(b"Received: from mta.example.org ([127.0.0.1])"))
            self.assertIn(b"with LMTP id ", stored)
            self.assertTrue(stored.endswith(sent))

        return ensureDeferred(run())

    def test_lhloLineBreak(self) -> Any:
        """
        A bare LF or CR in the LHLO argument (a line ends only at CRLF)
        does not end the Received field: the stored message gets no header
        field of the client's making.
        """

        async def run() -> None:
            server, _, port = await self.start_lmtp()
            alice = server.add_account("alice", ("alice@example.com",))

            def deliver() -> list[bytes]:
                return converse(port, [
                    b"LHLO mta\nX-Injected: lf\rX-Injected: cr",
                    b"MAIL FROM:<bob@example.org>",
                    b"RCPT TO:<alice@example.com>",
                    b"DATA",
                    message().rstrip(b"\r\n") + b"\r\n.",
                ])

            replies = await self.in_thread(deliver)
            self.assertTrue(replies[-1].startswith(b"250 "), replies)
            (stored,) = self.stored(server, alice)
            head = stored.partition(b"\r\n\r\n")[0]
            self.assertNotIn(b"\n", head.replace(b"\r\n", b""))
            self.assertNotIn(b"\r", head.replace(b"\r\n", b""))
            self.assertIn(b"Received: from mta X-Injected: lf X-Injected: cr ([127.0.0.1])", head)

        return ensureDeferred(run())

    def test_nullSender(self) -> Any:
        """
        A message with the null reverse-path (a bounce) is delivered, with
        C{Return-Path: <>}.
        """

        async def run() -> None:
            server, _, port = await self.start_lmtp()
            alice = server.add_account("alice", ("alice@example.com",))

            def deliver() -> None:
                client = self.connect(port)
                client.ehlo()
                client.sendmail("<>", ["alice@example.com"], message())
                client.quit()

            await self.in_thread(deliver)
            (stored,) = self.stored(server, alice)
            self.assertTrue(stored.startswith(b"Return-Path: <>\r\n"))

        return ensureDeferred(run())

    def test_unknownRecipient(self) -> Any:
        """
        Of two recipients, an unknown one gets 550 5.1.1 at RCPT; after
        DATA the known one alone gets its 250, and only its account has
        the message.
        """

        async def run() -> None:
            server, _, port = await self.start_lmtp()
            alice = server.add_account("alice", ("alice@example.com",))

            def deliver() -> Any:
                client = self.connect(port)
                client.ehlo()
                client.mail("bob@example.org")
                unknown = client.rcpt("nobody@example.com")
                known = client.rcpt("alice@example.com")
                data = client.data(message())
                # Replies come in order: if DATA had a second one, NOOP
                # would read it instead of its own.
                noop = client.noop()
                client.quit()
                return unknown, known, data, noop

            unknown, known, data, noop = await self.in_thread(deliver)
            self.assertEqual(unknown[0], 550)
            self.assertTrue(unknown[1].startswith(b"5.1.1 "))
            self.assertEqual(known[0], 250)
            self.assertEqual(data[0], 250)
            self.assertEqual(noop, (250, b"2.0.0 OK"))
            self.assertEqual(len(self.stored(server, alice)), 1)

        return ensureDeferred(run())

    def test_perRecipientRepliesInOrder(self) -> Any:
        """
        After DATA there is one reply per accepted recipient in RCPT order;
        a recipient whose address went away after RCPT gets 550 5.1.1 while
        the recipients before and after it get 250 and have the message.
        """

        async def run() -> None:
            server, _, port = await self.start_lmtp()
            alice = server.add_account("alice", ("alice@example.com",))
            server.add_account("bob", ("bob@example.com",))
            carol = server.add_account("carol", ("carol@example.com",))

            def deliver() -> Any:
                client = self.connect(port)
                client.ehlo()
                client.mail("dave@example.org")
                for address in ("alice@example.com", "bob@example.com", "carol@example.com"):
                    self.assertEqual(client.rcpt(address)[0], 250)
                server.env.database.run_sync(accounts.remove_account, "bob", write=True)
                replies = [client.data(message(to="alice@example.com, bob@example.com, carol@example.com"))]
                replies.append(client.getreply())
                replies.append(client.getreply())
                client.quit()
                return replies

            replies = await self.in_thread(deliver)
            self.assertEqual([code for code, _ in replies], [250, 550, 250])
            self.assertIn(b"<alice@example.com>", replies[0][1])
            self.assertTrue(replies[1][1].startswith(b"5.1.1 <bob@example.com>"))
            self.assertIn(b"<carol@example.com>", replies[2][1])
            self.assertEqual(len(self.stored(server, alice)), 1)
            self.assertEqual(len(self.stored(server, carol)), 1)

        return ensureDeferred(run())

    def test_aliasAndCase(self) -> Any:
        """
        An alias delivers to its account, whatever the case of the address.
        """

        async def run() -> None:
            from jmapd.ingest import recipients

            server, _, port = await self.start_lmtp()
            alice = server.add_account("alice", ("alice@example.com",))
            server.env.database.run_sync(recipients.add_alias, "alice", "Postmaster@Example.com", write=True)

            def deliver() -> Any:
                client = self.connect(port)
                client.ehlo()
                client.mail("bob@example.org")
                reply = client.rcpt("POSTMASTER@example.COM")
                client.data(message())
                client.quit()
                return reply

            reply = await self.in_thread(deliver)
            self.assertEqual(reply[0], 250)
            (stored,) = self.stored(server, alice)
            self.assertIn(b"Delivered-To: POSTMASTER@example.COM\r\n", stored)

        return ensureDeferred(run())

    def test_pipelining(self) -> Any:
        """
        Commands sent in one go (PIPELINING) are answered in order, each
        RCPT's reply before DATA's 354, and the message is delivered.
        """

        async def run() -> None:
            server, _, port = await self.start_lmtp()
            alice = server.add_account("alice", ("alice@example.com",))

            def deliver() -> list[bytes]:
                with after_lhlo(port) as (sock, f):
                    sock.sendall(
                        b"MAIL FROM:<bob@example.org>\r\nRCPT TO:<nobody@example.com>\r\n"
                        b"RCPT TO:<alice@example.com>\r\nDATA\r\n"
                    )
                    replies = [f.readline() for _ in range(4)]
                    sock.sendall(message() + b".\r\nQUIT\r\n")
                    replies += [f.readline(), f.readline()]
                return replies

            replies = await self.in_thread(deliver)
            self.assertEqual([reply[:4] for reply in replies], [b"250 ", b"550 ", b"250 ", b"354 ", b"250 ", b"221 "])
            self.assertEqual(len(self.stored(server, alice)), 1)

        return ensureDeferred(run())

    def test_dataInPieces(self) -> Any:
        """
        A message that arrives a few octets at a time (the end marker split
        across reads, a dot-stuffed line among them) is received whole,
        unstuffed, and the command after it is answered.
        """

        async def run() -> None:
            server, _, port = await self.start_lmtp()
            alice = server.add_account("alice", ("alice@example.com",))
            sent = message(body="one\r\n..two\r\nthree")

            def deliver() -> list[bytes]:
                with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
                    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                    f = sock.makefile("rb")
                    f.readline()
                    replies = []
                    for command in (b"LHLO mta", b"MAIL FROM:<bob@example.org>", b"RCPT TO:<alice@example.com>",
                                    b"DATA"):
                        sock.sendall(command + b"\r\n")
                        replies.append(read_reply(f)[:3])
                    stuffed = sent.replace(b"\r\n..", b"\r\n...") + b".\r\nNOOP\r\n"
                    for start in range(0, len(stuffed), 3):
                        sock.sendall(stuffed[start : start + 3])
                    replies += [f.readline()[:3], f.readline()[:3]]
                return replies

            replies = await self.in_thread(deliver)
            self.assertEqual(replies, [b"250", b"250", b"250", b"354", b"250", b"250"])
            (stored,) = self.stored(server, alice)
            self.assertTrue(stored.endswith(sent), stored)

        return ensureDeferred(run())

    def test_extensions(self) -> Any:
        """
        LHLO lists PIPELINING, ENHANCEDSTATUSCODES, 8BITMIME and SIZE with
        mail-max-size, and no STARTTLS without a certificate; HELO and
        EHLO are refused, as LMTP replaces them.
        """

        async def run() -> None:
            _, _, port = await self.start_lmtp(mail_max_size=12345)

            def ask() -> Any:
                client = self.connect(port)
                helo = client.docmd("HELO", "mta")
                ehlo = client.docmd("EHLO", "mta")
                client.ehlo()
                features = dict(client.esmtp_features)
                client.quit()
                return helo, ehlo, features

            helo, ehlo, features = await self.in_thread(ask)
            self.assertEqual(helo[0], 500)
            self.assertEqual(ehlo[0], 500)
            self.assertEqual(features.get("size"), "12345")
            for name in ("pipelining", "enhancedstatuscodes", "8bitmime"):
                self.assertIn(name, features)
            self.assertNotIn("starttls", features)

        return ensureDeferred(run())


def read_reply(f: Any) -> bytes:
    """
    The last line of the next reply on C{f} (a multi-line reply's lines
    have a hyphen after the code), or C{b""} at the end of input.
    """
    while True:
        line: bytes = f.readline()
        if not line or line[3:4] != b"-":
            return line


def converse(port: int, commands: list[bytes]) -> list[bytes]:
    """
    Send each command on a new connection, one at a time, and return the
    greeting and every reply (the last line of each), in order.
    """
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        f = sock.makefile("rb")
        replies = [f.readline()]
        for command in commands:
            sock.sendall(command + b"\r\n")
            replies.append(read_reply(f))
    return replies


@contextlib.contextmanager
def after_lhlo(port: int) -> Iterator[tuple[socket.socket, Any]]:
    """
    A connection that has been greeted and said LHLO: the socket, and a
    file reading its replies.
    """
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        f = sock.makefile("rb")
        f.readline()
        sock.sendall(b"LHLO mta\r\n")
        read_reply(f)
        yield sock, f


@contextlib.contextmanager
def in_data(port: int) -> Iterator[tuple[socket.socket, Any]]:
    """
    A connection that has said LHLO, MAIL FROM bob, RCPT TO alice and DATA,
    one at a time: the socket, and a file reading its replies.
    """
    with after_lhlo(port) as (sock, f):
        for command in (b"MAIL FROM:<bob@example.org>", b"RCPT TO:<alice@example.com>", b"DATA"):
            sock.sendall(command + b"\r\n")
            read_reply(f)
        yield sock, f


class ProtocolTests(LMTPTestCase):
    """
    The replies of the protocol itself (RFC 2033, RFC 5321, RFC 2034).
    """

    def test_enhancedStatusCodes(self) -> Any:
        """
        With ENHANCEDSTATUSCODES advertised, every reply but the greeting,
        the LHLO reply and DATA's 354 starts its text with an enhanced
        status code of its own class (RFC 2034 section 3), the replies
        written by Twisted's SMTP code included: an unknown command, a
        second MAIL, a syntax error, RCPT before MAIL, STARTTLS without a
        certificate, AUTH, an empty line.
        """

        async def run() -> None:
            server, _, port = await self.start_lmtp()
            server.add_account("alice", ("alice@example.com",))
            commands = [
                b"LHLO mta",
                b"FOO bar",
                b"RCPT TO:<alice@example.com>",
                b"MAIL FROM:<bob@example.org>",
                b"MAIL FROM:<carol@example.org>",
                b"RCPT TO:<>",
                b"RCPT TO:<alice@example.com>",
                b"DATA",
                b"Subject: hi\r\n\r\nhello\r\n.",
                b"MAIL FROM:garbage<",
                b"STARTTLS",
                b"AUTH PLAIN",
                b"",
                b"NOOP",
                b"QUIT",
            ]
            replies = await self.in_thread(converse, port, commands)
            greeting, lhlo, data = replies[0], replies[1], replies[8]
            self.assertEqual(greeting[:4], b"220 ")
            self.assertEqual(lhlo[:4], b"250 ")
            self.assertEqual(data[:4], b"354 ")
            coded = [reply for index, reply in enumerate(replies) if index not in (0, 1, 8)]
            for reply in coded:
                self.assertRegex(reply, rb"^([245])[0-9][0-9] \1\.[0-9]{1,3}\.[0-9]{1,3} ", reply)
            self.assertEqual(
                [reply[:9] for reply in coded],
                [
                    b"500 5.5.2",
                    b"503 5.5.1",
                    b"250 2.1.0",
                    b"503 5.5.1",
                    b"501 5.1.3",
                    b"250 2.1.5",
                    b"250 2.0.0",
                    b"501 5.5.4",
                    b"454 4.7.0",
                    b"502 5.5.1",
                    b"500 5.5.2",
                    b"250 2.0.0",
                    b"221 2.0.0",
                ],
            )

        return ensureDeferred(run())

    def test_lhloFirst(self) -> Any:
        """
        MAIL before LHLO gets 503 5.5.1 (LHLO opens every LMTP session,
        RFC 2033 section 4.1); after LHLO the same MAIL is accepted.
        """

        async def run() -> None:
            _, _, port = await self.start_lmtp()
            replies = await self.in_thread(
                converse, port, [b"MAIL FROM:<bob@example.org>", b"LHLO mta", b"MAIL FROM:<bob@example.org>"]
            )
            self.assertEqual(replies[1][:10], b"503 5.5.1 ")
            self.assertEqual(replies[3][:4], b"250 ")

        return ensureDeferred(run())

    def test_parameters(self) -> Any:
        """
        MAIL takes SIZE and BODY (the extensions advertised); another MAIL
        parameter, or any RCPT parameter (DSN is not advertised), gets
        555 5.5.4 (RFC 5321 section 4.1.1.11), a bad SIZE or BODY value
        501 5.5.4; the transaction then goes on and the message is
        delivered.
        """

        async def run() -> None:
            server, _, port = await self.start_lmtp()
            alice = server.add_account("alice", ("alice@example.com",))
            commands = [
                b"LHLO mta",
                b"MAIL FROM:<bob@example.org> SMTPUTF8",
                b"MAIL FROM:<bob@example.org> SIZE=many",
                b"MAIL FROM:<bob@example.org> BODY=BINARYMIME",
                b"MAIL FROM:<bob@example.org> size=100 body=8bitmime",
                b"RCPT TO:<alice@example.com> NOTIFY=NEVER",
                b"RCPT TO:<alice@example.com>",
                b"DATA",
                b"Subject: hi\r\n\r\nhello\r\n.",
            ]
            replies = await self.in_thread(converse, port, commands)
            self.assertEqual(
                [reply[:9] for reply in replies[2:]],
                [b"555 5.5.4", b"501 5.5.4", b"501 5.5.4", b"250 2.1.0", b"555 5.5.4", b"250 2.1.5", b"354 Start",
                 b"250 2.0.0"],
            )
            self.assertIn(b"SMTPUTF8", replies[2])
            self.assertIn(b"NOTIFY", replies[6])
            self.assertEqual(len(self.stored(server, alice)), 1)

        return ensureDeferred(run())

    def test_vrfyExpnHelp(self) -> Any:
        """
        VRFY gets 252 2.5.2 (never saying which addresses exist, RFC 5321
        section 3.5.3), EXPN 502 5.5.1 (section 7.3), HELP 214 2.0.0.
        """

        async def run() -> None:
            _, _, port = await self.start_lmtp()
            replies = await self.in_thread(converse, port, [b"LHLO mta", b"VRFY alice", b"EXPN staff", b"HELP"])
            self.assertEqual([reply[:10] for reply in replies[2:]], [b"252 2.5.2 ", b"502 5.5.1 ", b"214 2.0.0 "])

        return ensureDeferred(run())

    def test_notASCII(self) -> Any:
        """
        A command that is not ASCII is answered 500 5.5.2 like any unknown
        command, and the connection goes on (Twisted's SMTP code would
        fail on it and drop the connection).
        """

        async def run() -> None:
            _, _, port = await self.start_lmtp()
            replies = await self.in_thread(converse, port, [b"LHLO mta", b"\xffHELO there", b"NOOP"])
            self.assertEqual([reply[:10] for reply in replies[2:]], [b"500 5.5.2 ", b"250 2.0.0 "])

        return ensureDeferred(run())

    def test_halfClose(self) -> Any:
        """
        A client that shuts down its side of the connection right after
        the final dot (exim pipelines QUIT after it, then shuts down its
        side) still gets its replies, then the server closes: with one
        recipient refused at RCPT, exim saw the connection closed, and
        would have delivered again later the message filed meanwhile.  A
        message cut short by the shutdown is not delivered.
        """

        async def run() -> None:
            server, _, port = await self.start_lmtp()
            alice = server.add_account("alice", ("alice@example.com",))

            def send(after_data: bytes) -> bytes:
                with after_lhlo(port) as (sock, f):
                    sock.sendall(
                        b"MAIL FROM:<bob@example.org>\r\nRCPT TO:<alice@example.com>\r\n"
                        b"RCPT TO:<nobody@example.com>\r\nDATA\r\n"
                    )
                    for _ in range(4):
                        f.readline()
                    sock.sendall(after_data)
                    sock.shutdown(socket.SHUT_WR)
                    return f.read()

            with_quit = await self.in_thread(send, message(subject="one") + b".\r\nQUIT\r\n")
            self.assertRegex(with_quit, rb"^250 2\.0\.0 <alice@example\.com> delivered as M\S+\r\n221 2\.0\.0 Bye\r\n$")
            without_quit = await self.in_thread(send, message(subject="two") + b".\r\n")
            self.assertRegex(without_quit, rb"^250 2\.0\.0 <alice@example\.com> delivered as M\S+\r\n$")
            cut_short = await self.in_thread(send, message(subject="three"))
            self.assertEqual(cut_short, b"")
            stored = self.stored(server, alice)
            self.assertEqual(len(stored), 2)
            self.assertIn(b"Subject: one", stored[0])
            self.assertIn(b"Subject: two", stored[1])

        return ensureDeferred(run())

    def test_idleTimeout(self) -> None:
        """
        A client silent for the timeout gets 421 4.4.2 and is
        disconnected.
        """
        clock = Clock()
        factory = LMTPFactory(default_config(), None, None, clock, "mx.example.com")
        protocol = factory.buildProtocol(None)
        transport = StringTransport(peerAddress=IPv4Address("TCP", "127.0.0.1", 40000))
        protocol.makeConnection(transport)
        self.assertTrue(transport.value().startswith(b"220 mx.example.com "))
        transport.clear()
        clock.advance(protocol.timeout)
        self.assertTrue(transport.value().startswith(b"421 4.4.2 "), transport.value())
        self.assertTrue(transport.disconnecting)


class SizeTests(LMTPTestCase):
    """
    mail-max-size is advertised and enforced.
    """

    def test_declaredSizeTooBig(self) -> Any:
        """
        MAIL with a SIZE over mail-max-size gets 552 5.3.4.
        """

        async def run() -> None:
            _, _, port = await self.start_lmtp(mail_max_size=1000)

            def ask() -> Any:
                client = self.connect(port)
                client.ehlo()
                reply = client.mail("bob@example.org", ["SIZE=1001"])
                fits = client.mail("bob@example.org", ["SIZE=1000"])
                client.quit()
                return reply, fits

            reply, fits = await self.in_thread(ask)
            self.assertEqual(reply[0], 552)
            self.assertTrue(reply[1].startswith(b"5.3.4"))
            self.assertEqual(fits[0], 250)

        return ensureDeferred(run())

    def test_messageTooBig(self) -> Any:
        """
        A message over mail-max-size (not declared) gets 552 5.3.4 for each
        recipient after DATA, nothing is filed, and the connection goes on
        to deliver a message that fits.
        """

        async def run() -> None:
            server, _, port = await self.start_lmtp(mail_max_size=1000)
            alice = server.add_account("alice", ("alice@example.com",))
            server.add_account("bob", ("bob@example.com",))

            def deliver() -> Any:
                client = self.connect(port)
                client.ehlo()
                client.mail("carol@example.org")
                client.rcpt("alice@example.com")
                client.rcpt("bob@example.com")
                big = [client.data(message(body="x" * 2000))[0], client.getreply()[0]]
                small = client.sendmail("carol@example.org", ["alice@example.com"], message())
                client.quit()
                return big, small

            big, small = await self.in_thread(deliver)
            self.assertEqual(big, [552, 552])
            self.assertEqual(small, {})
            self.assertEqual(len(self.stored(server, alice)), 1)

        return ensureDeferred(run())


    def test_declaredSizeOfManyDigits(self) -> Any:
        """
        A SIZE of 5,000 digits (more than Python converts to an int) gets
        552 5.3.4 and the connection goes on; it was an unhandled error
        that dropped the connection.
        """

        async def run() -> None:
            _, _, port = await self.start_lmtp(mail_max_size=1000)
            replies = await self.in_thread(
                converse,
                port,
                [b"LHLO mta", b"MAIL FROM:<bob@example.org> SIZE=" + b"9" * 5000,
                 b"MAIL FROM:<bob@example.org> SIZE=" + b"0" * 5000 + b"1000"],
            )
            self.assertTrue(replies[2].startswith(b"552 5.3.4"), replies[2])
            self.assertTrue(replies[3].startswith(b"250 "), replies[3])

        return ensureDeferred(run())

    def test_messageOfExactlyMaxSize(self) -> Any:
        """
        A message of exactly mail-max-size octets is filed, even when its
        lines start with dots (stuffed on the wire) and its final dot
        arrives before the line break after it; one octet more gets 552.
        Before, received octets were compared with the limit before the
        end was found, so the stuffing or the final dot made it too big.
        """

        async def run() -> None:
            server, _, port = await self.start_lmtp(mail_max_size=1000)
            alice = server.add_account("alice", ("alice@example.com",))
            head = b"Subject: dots\r\n\r\n" + b".\r\n" * 10

            def send(content: bytes) -> bytes:
                with in_data(port) as (sock, f):
                    sock.sendall(content.replace(b"\r\n.", b"\r\n..") + b".")
                    sock.sendall(b"\r\n")
                    return f.readline()

            exact = head + b"x" * (1000 - len(head) - 2) + b"\r\n"
            self.assertEqual(len(exact), 1000)
            self.assertTrue((await self.in_thread(send, exact)).startswith(b"250 "))
            self.assertTrue((await self.in_thread(send, b"y" + exact)).startswith(b"552 5.3.4"))
            stored = self.stored(server, alice)
            self.assertEqual(len(stored), 1)
            # After the Return-Path and Delivered-To fields delivery adds.
            self.assertTrue(stored[0].endswith(b"\r\n" + exact))

        return ensureDeferred(run())


class RobustnessTests(LMTPTestCase):
    """
    Nothing is lost and nothing half-received is filed.
    """

    def test_droppedInData(self) -> Any:
        """
        A connection that drops before the final dot files nothing; the
        next message, on another connection, is filed alone.
        """

        async def run() -> None:
            server, _, port = await self.start_lmtp()
            alice = server.add_account("alice", ("alice@example.com",))

            def drop() -> None:
                with in_data(port) as (sock, _):
                    sock.sendall(message(subject="cut off") + b"more of it\r\n")

            def deliver() -> None:
                client = self.connect(port)
                client.ehlo()
                client.sendmail("bob@example.org", ["alice@example.com"], message(subject="complete"))
                client.quit()

            await self.in_thread(drop)
            await self.in_thread(deliver)
            stored = self.stored(server, alice)
            self.assertEqual(len(stored), 1)
            self.assertIn(b"Subject: complete", stored[0])

        return ensureDeferred(run())

    async def restart_between(self, data: str, **config: Any) -> tuple[Any, str, list[bytes]]:
        """
        Deliver "before", stop the service, start a new one on the same
        data directory (with C{config}) and deliver "after"; the new
        server, alice's id and her stored messages.
        """
        server, _, port = await self.start_lmtp(data=data, **config)
        alice = server.add_account("alice", ("alice@example.com",))

        def deliver(port: int, subject: str) -> Any:
            client = self.connect(port)
            client.ehlo()
            refused = client.sendmail("bob@example.org", ["alice@example.com"], message(subject=subject))
            client.quit()
            return refused

        self.assertEqual(await self.in_thread(deliver, port, "before"), {})
        await server.service.stopService()
        again, _, port = await self.start_lmtp(data=data, **config)
        self.assertEqual(await self.in_thread(deliver, port, "after"), {})
        return again, alice, self.stored(again, alice)

    def test_restartAfterReply(self) -> Any:
        """
        A message acknowledged with 250 is in the store after the service
        stops and a new one starts on the same data directory.
        """

        async def run() -> None:
            _, _, stored = await self.restart_between(os.path.abspath(self.mktemp()))
            self.assertEqual(len(stored), 2)
            self.assertIn(b"Subject: before", stored[0])
            self.assertIn(b"Subject: after", stored[1])

        return ensureDeferred(run())

    def test_restartAfterReplyBlobsInDatabase(self) -> Any:
        """
        With blob-store database on SQLite, a message acknowledged with
        250 is in the database, its bytes included, after the service
        stops and a new one starts on the same data directory; no blob
        file was written.
        """

        async def run() -> None:
            data = os.path.abspath(self.mktemp())
            again, _, stored = await self.restart_between(data, blob_store="database")
            self.assertEqual(len(stored), 2)
            self.assertTrue(stored[0].endswith(message(subject="before")))
            self.assertTrue(stored[1].endswith(message(subject="after")))
            blob_ids = again.env.database.run_sync(
                lambda txn: {row[0] for row in txn.fetchall("SELECT blob_id FROM blob_data")}
            )
            self.assertEqual(len(blob_ids), 2)
            self.assertFalse(os.path.exists(os.path.join(data, "blobs")))

        return ensureDeferred(run())

    def test_commandsAfterStop(self) -> Any:
        """
        Once the service is stopping, a new MAIL gets 421 and nothing more
        is taken.
        """

        async def run() -> None:
            server, lmtp, port = await self.start_lmtp()
            server.add_account("alice", ("alice@example.com",))

            def hello() -> smtplib.LMTP:
                client = self.connect(port)
                client.ehlo()
                return client

            client = await self.in_thread(hello)
            assert lmtp.factory is not None
            lmtp.factory.stopping = True
            reply = await self.in_thread(client.mail, "bob@example.org")
            client.close()
            self.assertEqual(reply[0], 421)

        return ensureDeferred(run())


class PushTests(LMTPTestCase):
    """
    A delivery is a change like any other.
    """

    def test_statesPublished(self) -> Any:
        """
        After a delivery the state listeners hear of new Email, Mailbox,
        Thread and EmailDelivery states of the recipient's account.
        """

        async def run() -> None:
            server, _, port = await self.start_lmtp()
            alice = server.add_account("alice", ("alice@example.com",))
            heard: list[dict[str, dict[str, int]]] = []
            server.env.state_listeners.append(heard.append)

            def deliver() -> None:
                client = self.connect(port)
                client.ehlo()
                client.sendmail("bob@example.org", ["alice@example.com"], message())
                client.quit()

            await self.in_thread(deliver)
            types = set()
            for changed in heard:
                types.update(changed.get(alice, {}))
            self.assertTrue({"Email", "Mailbox", "Thread", "EmailDelivery"} <= types, types)

        return ensureDeferred(run())


class TLSTests(LMTPTestCase):
    """
    STARTTLS and lmtp-tls-only.
    """

    def certificate(self) -> tuple[str, str]:
        return make_certificate(os.path.abspath(self.mktemp()))

    def test_startTLS(self) -> Any:
        """
        With a certificate, STARTTLS is advertised and works; a message
        delivered over it is marked LMTPS in its Received field.
        """

        async def run() -> None:
            cert, key = self.certificate()
            server, _, port = await self.start_lmtp(lmtp_cert_path=cert, lmtp_key_path=key)
            alice = server.add_account("alice", ("alice@example.com",))

            def deliver() -> Any:
                client = self.connect(port)
                client.ehlo()
                advertised = client.has_extn("starttls")
                context = ssl.create_default_context(cafile=cert)
                context.check_hostname = False
                client.starttls(context=context)
                client.ehlo()
                again = client.has_extn("starttls")
                refused = client.sendmail("bob@example.org", ["alice@example.com"], message())
                client.quit()
                return advertised, again, refused

            advertised, again, refused = await self.in_thread(deliver)
            self.assertTrue(advertised)
            self.assertFalse(again)
            self.assertEqual(refused, {})
            (stored,) = self.stored(server, alice)
            self.assertIn(b"with LMTPS id ", stored)

        return ensureDeferred(run())

    def test_startTLSChain(self) -> Any:
        """
        A certificate file with the chain (the server's certificate, then
        the intermediate) is sent whole over STARTTLS: a client trusting
        only the root CA verifies the server, host name included.
        """

        async def run() -> None:
            root_pem, chain, key = make_chain(os.path.abspath(self.mktemp()))
            server, _, port = await self.start_lmtp(lmtp_cert_path=chain, lmtp_key_path=key)
            alice = server.add_account("alice", ("alice@example.com",))

            def deliver() -> Any:
                client = smtplib.LMTP("localhost", port)
                client.ehlo()
                context = ssl.create_default_context(cadata=root_pem.decode("ascii"))
                client.starttls(context=context)
                client.ehlo()
                refused = client.sendmail("bob@example.org", ["alice@example.com"], message())
                client.quit()
                return refused

            self.assertEqual(await self.in_thread(deliver), {})
            self.assertEqual(len(self.stored(server, alice)), 1)

        return ensureDeferred(run())

    def test_tlsOnly(self) -> Any:
        """
        With lmtp-tls-only, MAIL before STARTTLS gets 530 5.7.0; after
        STARTTLS it is accepted.
        """

        async def run() -> None:
            cert, key = self.certificate()
            _, _, port = await self.start_lmtp(lmtp_cert_path=cert, lmtp_key_path=key, lmtp_tls_only=True)

            def ask() -> Any:
                client = self.connect(port)
                client.ehlo()
                before = client.mail("bob@example.org")
                context = ssl.create_default_context(cafile=cert)
                context.check_hostname = False
                client.starttls(context=context)
                client.ehlo()
                after = client.mail("bob@example.org")
                client.quit()
                return before, after

            before, after = await self.in_thread(ask)
            self.assertEqual(before[0], 530)
            self.assertTrue(before[1].startswith(b"5.7.0"))
            self.assertEqual(after[0], 250)

        return ensureDeferred(run())

    def test_certificateWithoutKey(self) -> None:
        """
        lmtp-cert-path without lmtp-key-path cannot start (the
        configuration refuses it too; an embedding application may build
        its Config otherwise).
        """
        cert, _ = self.certificate()
        config = attrs.evolve(default_config(), lmtp_cert_path=cert)
        self.assertRaises(LMTPStartupError, tls_context, config)

    def test_tlsOnlyWithoutCertificate(self) -> Any:
        """
        lmtp-tls-only without a certificate fails start-up instead of
        refusing every message.
        """

        async def run() -> None:
            server = await self.start_server()
            env = attrs.evolve(server.env, config=attrs.evolve(server.env.config, lmtp_tls_only=True))
            lmtp = LMTPService(env, reactor, port=0)
            lmtp.startService()
            self.addCleanup(lmtp.stopService)
            with self.assertRaises(LMTPStartupError):
                await lmtp.listening

        return ensureDeferred(run())


class TrustTests(LMTPTestCase):
    """
    lmtp-trusted-ips decides who may connect.
    """

    def test_untrustedRefused(self) -> Any:
        """
        A client whose address is not in lmtp-trusted-ips gets 421 4.7.0
        when it connects, and is disconnected.
        """

        async def run() -> None:
            _, _, port = await self.start_lmtp(lmtp_trusted_ips=["10.0.0.0/8", "::1"])

            def connect() -> Any:
                try:
                    self.connect(port)
                except smtplib.SMTPConnectError as error:
                    return error.smtp_code, error.smtp_error
                return None

            refused = await self.in_thread(connect)
            self.assertIsNotNone(refused)
            self.assertEqual(refused[0], 421)
            self.assertTrue(refused[1].startswith(b"4.7.0"))

        return ensureDeferred(run())

    def test_isTrusted(self) -> None:
        """
        Addresses match networks and single addresses; an IPv4-mapped IPv6
        address counts as its IPv4 address; a non-IP host never matches.
        """
        import ipaddress

        networks = [ipaddress.ip_network("127.0.0.1/32"), ipaddress.ip_network("10.0.0.0/8")]
        self.assertTrue(is_trusted("127.0.0.1", networks))
        self.assertTrue(is_trusted("10.1.2.3", networks))
        self.assertTrue(is_trusted("::ffff:10.1.2.3", networks))
        self.assertFalse(is_trusted("192.168.1.1", networks))
        self.assertFalse(is_trusted("::1", networks))
        self.assertFalse(is_trusted("unix-socket", networks))


class ServiceTests(LMTPTestCase):
    """
    L{lmtp_service} follows lmtp-port.
    """

    def test_disabled(self) -> Any:
        """
        lmtp-port 0 means no LMTP service.
        """

        async def run() -> None:
            server = await self.start_server(lmtp_port=0)
            self.assertIsNone(lmtp_service(server.env, reactor))

        return ensureDeferred(run())

    def test_enabled(self) -> Any:
        """
        A non-zero lmtp-port gives an LMTP service named "lmtp" that
        listens on that port.
        """

        async def run() -> None:
            with socket.socket() as probe:
                probe.bind(("127.0.0.1", 0))
                free = probe.getsockname()[1]
            server = await self.start_server()
            env = attrs.evolve(server.env, config=attrs.evolve(server.env.config, lmtp_port=free))
            service = lmtp_service(env, reactor)
            assert service is not None
            self.assertEqual(service.name, "lmtp")
            service.setServiceParent(server.service)
            port = await service.listening
            self.assertEqual(port.getHost().port, free)

        return ensureDeferred(run())
