# -*- test-case-name: tests.ingest.test_lmtp -*-
"""
The LMTP server (RFC 2033) an MTA such as postfix delivers mail through.

It is Twisted's ESMTP server protocol (L{twisted.mail.smtp.ESMTP}: command
parsing, addresses, STARTTLS, timeouts) with what LMTP changes and what a
final delivery agent needs:

 - C{LHLO} instead of HELO/EHLO; PIPELINING, ENHANCEDSTATUSCODES, 8BITMIME
   and SIZE are advertised, and STARTTLS when a certificate is configured.
 - Each RCPT is resolved to an account (L{jmapd.ingest.recipients});
   an unknown address gets C{550 5.1.1} at once.
 - The message is collected whole (dot-unstuffed, counted against
   C{mail-max-size}: over it, C{552 5.3.4}) and handed once to the
   L{jmapd.ingest.delivery.Deliverer}; after the final dot there is one
   reply per accepted recipient, in RCPT order, sent only when that
   recipient's copy is durable (or has failed on its own).
 - Clients outside C{lmtp-trusted-ips} get C{421} when they connect; with
   C{lmtp-tls-only}, MAIL is refused until STARTTLS.
 - Every reply but the greeting and the LHLO reply carries an enhanced
   status code (RFC 2034 section 3, since ENHANCEDSTATUSCODES is
   advertised), Twisted's own replies included (L{LMTPServer.sendCode}).
 - MAIL needs LHLO first (again after STARTTLS, RFC 3207 section 4.2); a
   MAIL or RCPT parameter of an extension not advertised gets C{555 5.5.4}
   (RFC 5321 section 4.1.1.11); VRFY gets C{252}, EXPN C{502} (RFC 5321
   sections 3.5.3 and 7.3).

Twisted's server answers a command whose check is asynchronous (RCPT
looks up the database) whenever that check ends, and reads the next
command meanwhile; with pipelining that would reorder replies and let DATA
overtake the RCPTs before it.  So while a command is in progress the lines
that arrive are held, and processed in order once it is answered.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IHalfCloseableProtocol
from twisted.internet.protocol import ServerFactory
from twisted.logger import Logger
from twisted.mail import smtp
from twisted.python.failure import Failure
from zope.interface import implementer

from jmapd.ingest.delivery import Deliverer, Envelope, Reply, temporary_failure
from jmapd.ingest.spooled import SpooledDeliverer
from jmapd.util.gate import Gate

log = Logger()

#: Most RCPTs accepted for one message.
MAX_RECIPIENTS = 1000

#: Longest line accepted; RFC 5321 allows 1000 octets, real mail is
#: sometimes longer, and a line longer than this ends the connection.
MAX_LINE = 65536


#: A reply text that starts with an enhanced status code (RFC 3463).
_ENHANCED = re.compile(rb"[245]\.[0-9]{1,3}\.[0-9]{1,3}(?: |$)")

#: The enhanced status code for a reply whose text has none (Twisted's
#: own replies): by the command it answers and its code, else by its
#: code, else the class's undefined status.
_STATUS_FOR_COMMAND = {
    (b"MAIL", 501): b"5.5.4",
    (b"MAIL", 553): b"5.1.7",
    (b"RCPT", 501): b"5.1.3",
}
_STATUS = {
    220: b"2.0.0",
    221: b"2.0.0",
    250: b"2.0.0",
    421: b"4.3.0",
    451: b"4.3.0",
    452: b"4.3.1",
    454: b"4.7.0",
    500: b"5.5.2",
    501: b"5.5.4",
    502: b"5.5.1",
    503: b"5.5.1",
    504: b"5.5.4",
    530: b"5.7.0",
    550: b"5.0.0",
    552: b"5.3.4",
    553: b"5.1.3",
    554: b"5.0.0",
    555: b"5.5.4",
}

#: The values of the MAIL parameters of the extensions advertised (SIZE
#: takes a number, checked on its own).
_BODY_TYPES = (b"7BIT", b"8BITMIME")


def _parameters(pattern: Any, rest: bytes) -> list[bytes]:
    """
    The ESMTP parameters (C{NAME=value}) after the path of a MAIL or RCPT
    command that C{pattern} (Twisted's C{mail_re} or C{rcpt_re}) matches;
    none when it does not match (Twisted then answers the syntax error).
    """
    match = pattern.match(rest)
    return (match.group("opts") or b"").split() if match else []


def is_trusted(host: str, networks: Iterable[ipaddress.IPv4Network | ipaddress.IPv6Network]) -> bool:
    """
    Whether the client address C{host} is in one of C{networks}; an
    IPv4-mapped IPv6 address counts as its IPv4 address.
    """
    try:
        address = ipaddress.ip_address(host.split("%")[0])
    except ValueError:
        return False
    candidates: list[Any] = [address]
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        candidates.append(address.ipv4_mapped)
    return any(candidate in network for candidate in candidates for network in networks)


@implementer(IHalfCloseableProtocol)
class LMTPServer(smtp.ESMTP):
    """
    One LMTP connection.  Everything it shares with the other connections
    (configuration, resolver, deliverer, TLS context) is on its factory.

    A client may shut down its side of the connection once it has sent
    everything (exim pipelines QUIT after the final dot, then shuts down
    its side): what it sent is still answered (L{readConnectionLost}).
    Were the connection dropped instead, the replies to a message it had
    sent whole would be lost although the message is filed, and the MTA
    would deliver it again later.
    """

    MAX_LENGTH = MAX_LINE
    timeout = 300
    noisy = False

    def __init__(self, factory: LMTPFactory) -> None:
        smtp.ESMTP.__init__(self, chal={}, contextFactory=factory.tls)
        self.factory = factory
        self.host = factory.hostname.encode("idna")
        self._pending = 0
        self._held: list[bytes] = []
        self._envelope: tuple[Any, list[tuple[Any, str]], Any] | None = None
        self._raw = bytearray()
        self._too_big = False
        self._refused = False
        # The command being answered (for the enhanced status code of a
        # reply that has none); None until the first one (the greeting).
        self._verb: bytes | None = None
        # The client has shut down its side: close once all is answered.
        self._input_closed = False

    # -- connection ------------------------------------------------------

    def callLater(self, period: float, func: Any) -> Any:  # type: ignore[override]
        """
        TimeoutMixin's timer, on the factory's clock rather than the global
        reactor.
        """
        return self.factory.clock.callLater(period, func)

    @property
    def _link(self) -> Any:
        """
        The transport, untyped: TCP and TLS transports have more than
        L{ITransport} says (getPeer, disconnecting, startTLS).
        """
        return self.transport

    def connectionMade(self) -> None:
        peer = self._link.getPeer()
        host = getattr(peer, "host", "")
        if not is_trusted(host, self.factory.trusted):
            self._refused = True
            log.warn("LMTP connection from {peer} refused: not in lmtp-trusted-ips", peer=host)
            self.sendCode(421, b"4.7.0 " + self.host + b" you are not allowed to deliver here")
            self._link.loseConnection()
            return
        # Replies are small writes answering small writes: without
        # TCP_NODELAY each would wait for the delayed ACK of the last one.
        set_no_delay = getattr(self._link, "setTcpNoDelay", None)
        if set_no_delay is not None:
            set_no_delay(True)
        self.factory.connections.add(self)
        ready = self.factory.ready
        if ready is None:
            smtp.ESMTP.connectionMade(self)
            return
        # The greeting waits until delivery can file (the spool's filing
        # process runs); the client waits for it before its first command.
        self._link.pauseProducing()

        def greet(_: None) -> None:
            if self._link.connected:
                self._link.resumeProducing()
                smtp.ESMTP.connectionMade(self)

        ready.wait().addCallback(greet)

    def connectionLost(self, reason: Failure = smtp.protocol.connectionDone) -> None:  # type: ignore[attr-defined]
        self.factory.connections.discard(self)
        if self.mode == smtp.DATA:  # type: ignore[attr-defined]
            log.info("LMTP connection lost during DATA: nothing delivered")
        self._held = []
        smtp.ESMTP.connectionLost(self, reason)

    def greeting(self) -> bytes:
        return self.host + b" LMTP jmapd ready"

    def timeoutConnection(self) -> None:
        self.sendCode(421, b"4.4.2 " + self.host + b" idle for too long, closing the connection")
        self._link.loseConnection()

    def sendCode(self, code: int, message: bytes = b"") -> None:
        """
        Send a reply, with an enhanced status code in front of its text
        when it has none (RFC 2034 section 3: every reply except the
        greeting, the LHLO reply and intermediate replies such as 354,
        whose class has no enhanced codes).
        """
        verb = self._verb
        if verb not in (None, b"LHLO") and code // 100 in (2, 4, 5) and not _ENHANCED.match(message):
            status = _STATUS_FOR_COMMAND.get((verb, code)) or _STATUS.get(code) or b"%d.0.0" % (code // 100)
            message = status + b" " + message
        smtp.ESMTP.sendCode(self, code, message)

    def state_COMMAND(self, line: bytes) -> None:
        parts = line.split(None, 1)
        self._verb = parts[0].upper() if parts else b""
        smtp.ESMTP.state_COMMAND(self, line)

    def lookupMethod(self, command: bytes) -> Any:
        """
        The handler of C{command}; none (so "not recognised") for one that
        is not ASCII, which Twisted would fail on.
        """
        if not command.isascii():
            return None
        return smtp.ESMTP.lookupMethod(self, command)

    def lineReceived(self, line: bytes) -> Any:
        if self._refused:
            return None
        if self._pending:
            self._held.append(line)
            return None
        return smtp.ESMTP.lineReceived(self, line)

    def lineLengthExceeded(self, line: bytes) -> None:
        # The receiver drops the rest of what it buffered, so where the
        # next line starts is unknown: the only safe thing is to stop.
        self.sendCode(421, b"4.5.0 line too long, closing the connection")
        self.mode = smtp.COMMAND  # type: ignore[attr-defined]
        self._link.loseConnection()

    def _start(self) -> None:
        self._pending += 1

    def _finish(self) -> None:
        """
        The command in progress is answered: process the lines held
        meanwhile, in order, until one of them starts another.
        """
        self._pending -= 1
        while not self._pending and self._held and self._link is not None and not self._link.disconnecting:
            smtp.ESMTP.lineReceived(self, self._held.pop(0))
        self._close_when_answered()

    def readConnectionLost(self) -> None:
        """
        The client will send nothing more: answer what it sent (the lines
        held behind a command in progress included), then close.  A
        message cut short (still in DATA, when nothing is in progress) is
        closed on at once and not delivered (L{connectionLost}).
        """
        self._input_closed = True
        self._close_when_answered()

    def writeConnectionLost(self) -> None:
        """
        Nothing to do: we never shut down our side alone.
        """

    def _close_when_answered(self) -> None:
        if self._input_closed and not self._pending and self._link is not None:
            self._link.loseConnection()

    # -- commands --------------------------------------------------------

    def extensions(self) -> dict[bytes, Any]:
        ext: dict[bytes, Any] = {
            b"PIPELINING": None,
            b"ENHANCEDSTATUSCODES": None,
            b"8BITMIME": None,
            b"SIZE": [str(self.factory.max_size).encode("ascii")],
        }
        if self.canStartTLS and not self.startedTLS:
            ext[b"STARTTLS"] = None
        return ext

    def do_LHLO(self, rest: bytes) -> None:
        smtp.ESMTP.do_EHLO(self, rest)

    def do_UNKNOWN(self, rest: bytes) -> None:
        self.sendCode(500, b"5.5.2 command not recognised")

    def ext_AUTH(self, rest: bytes) -> None:
        # Not advertised: the MTA is trusted by its address (and TLS).
        self.sendCode(502, b"5.5.1 AUTH is not offered here")

    def do_VRFY(self, rest: bytes) -> None:
        # RFC 5321 section 3.5.3: the answer of a server that does not
        # tell which addresses exist.
        self.sendCode(252, b"2.5.2 Cannot VRFY user, but will accept message and attempt delivery")

    def do_EXPN(self, rest: bytes) -> None:
        self.sendCode(502, b"5.5.1 EXPN is not offered here")

    def do_HELP(self, rest: bytes) -> None:
        commands = b"LHLO MAIL RCPT DATA RSET NOOP QUIT VRFY"
        if self.canStartTLS and not self.startedTLS:
            commands += b" STARTTLS"
        self.sendCode(214, b"2.0.0 LMTP (RFC 2033), commands: " + commands)

    def do_HELO(self, rest: bytes) -> None:
        self.sendCode(500, b"5.5.1 this is LMTP: say LHLO")

    do_EHLO = do_HELO

    def do_NOOP(self, rest: bytes) -> None:
        self.sendCode(250, b"2.0.0 OK")

    def do_QUIT(self, rest: bytes) -> None:
        self.sendCode(221, b"2.0.0 Bye")
        self._link.loseConnection()

    def do_RSET(self, rest: bytes) -> None:
        self._from = None
        self._to = []
        self.sendCode(250, b"2.0.0 OK")

    def ext_STARTTLS(self, rest: bytes) -> None:
        started = self.startedTLS
        smtp.ESMTP.ext_STARTTLS(self, rest)
        if self.startedTLS and not started:
            # RFC 3207 section 4.2: forget what was said before TLS.
            self._helo = (None, self._helo[1] if self._helo else None)
            self._from = None
            self._to = []

    def do_MAIL(self, rest: bytes) -> None:
        if self.factory.stopping:
            self.sendCode(421, b"4.3.2 shutting down, try again later")
            self._link.loseConnection()
            return
        if self.factory.tls_only and not self.startedTLS:
            self.sendCode(530, b"5.7.0 Must issue a STARTTLS command first")
            return
        if self._helo is None or self._helo[0] is None:
            self.sendCode(503, b"5.5.1 say LHLO first")
            return
        for option in _parameters(self.mail_re, rest):
            name, _, value = option.partition(b"=")
            name = name.upper()
            if name == b"SIZE":
                if not value.isdigit():
                    self.sendCode(501, b"5.5.4 SIZE takes a number of octets")
                    return
                # Compared by length first: int() refuses more than 4,300
                # digits (an unhandled error that dropped the connection).
                digits = value.lstrip(b"0")
                if len(digits) > len(str(self.factory.max_size)) or int(digits or b"0") > self.factory.max_size:
                    self.sendCode(552, b"5.3.4 Message size exceeds fixed maximum message size")
                    return
            elif name == b"BODY":
                if value.upper() not in _BODY_TYPES:
                    self.sendCode(501, b"5.5.4 BODY is 7BIT or 8BITMIME")
                    return
            else:
                self.sendCode(555, b"5.5.4 MAIL parameter " + name + b" is not recognised")
                return
        smtp.ESMTP.do_MAIL(self, rest)

    def do_RCPT(self, rest: bytes) -> None:
        options = _parameters(self.rcpt_re, rest)
        if self._from is not None and options:
            # No extension with RCPT parameters (DSN's NOTIFY, ORCPT) is
            # advertised.
            name = options[0].partition(b"=")[0].upper()
            self.sendCode(555, b"5.5.4 RCPT parameter " + name + b" is not recognised")
            return
        smtp.ESMTP.do_RCPT(self, rest)

    def validateFrom(self, helo: Any, origin: smtp.Address) -> smtp.Address:
        # Final delivery accepts any reverse-path, including <>; the MTA
        # decided already.
        return origin

    def _cbFromValidate(self, fromEmail: Any, code: int = 250, msg: bytes = b"2.1.0 Sender OK") -> None:
        smtp.ESMTP._cbFromValidate(self, fromEmail, code, msg)

    def validateTo(self, user: smtp.User) -> Deferred[str]:
        # Every way out of here ends in _cbToValidate or _ebToValidate,
        # which call _finish.
        self._start()
        try:
            address = str(user.dest)
        except UnicodeDecodeError:
            raise smtp.SMTPBadRcpt(user, 553, "5.1.3 the address is not ASCII") from None
        if len(self._to) >= MAX_RECIPIENTS:
            raise smtp.SMTPServerError(452, "4.5.3 Too many recipients")

        def found(account_id: str | None) -> str:
            if account_id is None:
                raise smtp.SMTPBadRcpt(user, 550, f"5.1.1 <{address}>: no such mailbox")
            return account_id

        return self.factory.resolver.resolve(address).addCallback(found)

    def _cbToValidate(self, to: Any, user: Any = None, code: int = 250, msg: bytes = b"2.1.5 Recipient OK") -> None:
        smtp.ESMTP._cbToValidate(self, to, user, code, msg)
        self._finish()

    def _ebToValidate(self, failure: Failure) -> None:
        if failure.check(smtp.SMTPBadRcpt, smtp.SMTPServerError) is None:
            log.failure("cannot resolve a recipient", failure)
            self.sendCode(451, b"4.3.0 Temporary local failure, try again later")
        else:
            smtp.ESMTP._ebToValidate(self, failure)
        self._finish()

    def do_DATA(self, rest: bytes) -> None:
        if self._from is None or not self._to:
            self.sendCode(503, b"5.5.1 Need MAIL and RCPT first")
            return
        self._envelope = (self._from, self._to, self._helo)
        self._from = None
        self._to = []
        # The content as received, after a CRLF that stands for the end of
        # the DATA line, so that every line start is a CRLF before it.
        self._raw = bytearray(b"\r\n")
        self._too_big = False
        self.mode = smtp.DATA  # type: ignore[attr-defined]
        self.sendCode(354, b"Start mail input; end with <CRLF>.<CRLF>")

    def dataReceived(self, data: bytes) -> None:
        """
        In DATA, take the bytes as they come and look for the end of the
        message, instead of handling the message line by line (most of
        the cost of receiving it).
        """
        if self.mode == smtp.DATA and not self._pending:  # type: ignore[attr-defined]
            partial, self._buffer = self._buffer, b""
            self.resetTimeout()
            self._feed(partial + data)
            return
        smtp.ESMTP.dataReceived(self, data)

    def state_DATA(self, line: bytes) -> None:
        # Lines that came in the same read as the DATA command.
        self._feed(line + b"\r\n")

    def _feed(self, chunk: bytes) -> None:
        raw = self._raw
        start = max(len(raw) - 4, 0)
        raw += chunk
        end = raw.find(b"\r\n.\r\n", start)
        if end < 0:
            # Only a bound on what is buffered; the message is measured
            # exactly once its end is found.  What is received can exceed
            # the message by a dot per line starting with one (a third, for
            # lines of one dot) and by the start of the end marker: a
            # message of exactly mail-max-size whose final dot came before
            # its line break was refused when this compared with the limit.
            max_size = self.factory.max_size
            if len(raw) - 2 > max_size + max_size // 3 + 3:
                # Keep reading to the end, keeping only what may be the
                # start of the end marker.
                self._too_big = True
                del raw[:-4]
            return
        leftover = bytes(raw[end + 5 :])
        # RFC 5321 section 4.5.2: a line starting with "." loses it.
        message = b"" if self._too_big else bytes(raw[: end + 2]).replace(b"\r\n.", b"\r\n")[2:]
        if len(message) > self.factory.max_size:
            self._too_big = True
        self._raw = bytearray()
        self.mode = smtp.COMMAND  # type: ignore[attr-defined]
        self._end_of_data(message)
        if leftover:
            smtp.ESMTP.dataReceived(self, leftover)

    def _end_of_data(self, message: bytes) -> None:
        assert self._envelope is not None
        origin, accepted, helo = self._envelope
        self._envelope = None
        count = len(accepted)
        if self._too_big:
            limit = str(self.factory.max_size).encode("ascii")
            for _ in range(count):
                self.sendCode(552, b"5.3.4 Message too big for system (limit " + limit + b" octets)")
            return
        if self.factory.stopping:
            for _ in range(count):
                self.sendCode(421, b"4.3.2 shutting down, try again later")
            return
        peer = self._link.getPeer()
        envelope = Envelope(
            mail_from=str(origin),
            recipients=tuple((str(user.dest), account_id) for user, account_id in accepted),
            helo=(helo[0] or b"").decode("ascii", "replace") if helo else "",
            peer=getattr(peer, "host", ""),
            tls=bool(self.startedTLS),
        )
        self._start()
        d = self.factory.deliverer.deliver(envelope, message)

        def answer(replies: list[Reply]) -> None:
            for reply in replies:
                self.sendCode(reply.code, reply.text.encode("ascii", "replace"))

        def failed(failure: Failure) -> None:
            log.failure("delivery failed", failure)
            for _ in range(count):
                reply = temporary_failure()
                self.sendCode(reply.code, reply.text.encode("ascii"))

        d.addCallbacks(answer, failed)
        d.addBoth(lambda _: self._finish())


class LMTPFactory(ServerFactory):
    """
    What every LMTP connection of one listener shares.

    @ivar connections: the open connections (closed when the service stops).
    @ivar stopping: set when the service stops: no new message is taken.
    """

    protocol = LMTPServer  # type: ignore[assignment]
    noisy = False

    def __init__(
        self,
        config: Any,
        resolver: Any,
        deliverer: Deliverer | SpooledDeliverer,
        clock: Any,
        hostname: str,
        tls: Any = None,
    ) -> None:
        self.config = config
        self.resolver = resolver
        self.deliverer = deliverer
        self.clock = clock
        self.hostname = hostname
        self.tls = tls
        self.max_size = int(config.mail_max_size)
        self.tls_only = bool(config.lmtp_tls_only)
        self.trusted = [ipaddress.ip_network(network) for network in config.lmtp_trusted_ips]
        self.connections: set[LMTPServer] = set()
        self.stopping = False
        #: Set to a closed L{Gate} for connections to wait, before their
        #: greeting, until it opens (delivery can file).
        self.ready: Gate | None = None

    def buildProtocol(self, addr: Any) -> LMTPServer:
        return LMTPServer(self)
