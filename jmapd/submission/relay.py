# -*- test-case-name: tests.submission.test_relay -*-
"""
The SMTP relay client, and L{queue_message}, the way every outgoing
message enters the queue.

L{Relay.send} hands one message to the configured submission server with
Twisted's ESMTP client (STARTTLS or implicit TLS, AUTH) and reports one
SMTP reply per recipient: the answer to its RCPT TO, or the answer to the
end of DATA when the relay accepted the recipient and then refused the
message.  It never retries: that is the queue's job
(L{jmapd.submission.queue}), which keeps what it must retry in the
database.  Failures that concern no particular recipient (the relay cannot
be reached, refuses TLS or our credentials, times out) are reported as a
synthetic temporary reply for every recipient, in the form RFC 8621
section 7 gives for DeliveryStatus.smtpReply ("451 4.4.1 ..."), because
they may well pass once the relay or its configuration is fixed.
"""

from __future__ import annotations

import io
import re
from collections.abc import Sequence
from typing import Any

from attrs import frozen
from twisted.internet import defer, protocol
from twisted.internet.ssl import Certificate, optionsForClientTLS, trustRootFromCertificates
from twisted.logger import Logger
from twisted.mail.smtp import (
    SUCCESS,
    CramMD5ClientAuthenticator,
    ESMTPClient,
    LOGINAuthenticator,
    PLAINAuthenticator,
    SMTPClientError,
    SMTPTimeoutError,
)

from jmapd.submission import SendingDisabled, sending_enabled

log = Logger()


# -- queueing --------------------------------------------------------------------


def queue_message(
    txn: Any, env: Any, account_id: str, mail_from: str, rcpt_to: list[str], raw: bytes
) -> str:
    """
    Queue a message the server sends on its own (a vacation reply, for
    example) inside the caller's transaction: it is sent once that
    transaction has committed, and never if it rolls back.  Nothing in it
    is changed (unlike an EmailSubmission, whose Bcc header is removed).

    @param mail_from: the envelope sender; C{""} is the null reverse-path
        (C{MAIL FROM:<>}), which RFC 3834 asks automatic replies to use.
    @param rcpt_to: the envelope recipients (plain addresses).
    @return: the queue id of the message.
    @raise SendingDisabled: C{smtp-relay-host} is not set, so the message
        could never leave; check L{jmapd.submission.sending_enabled} first.
    @raise ValueError: no recipients.
    """
    from jmapd.submission import queue

    if not sending_enabled(env.config):
        raise SendingDisabled("smtp-relay-host is not set; nothing can be sent")
    if not rcpt_to:
        raise ValueError("a message needs at least one recipient")
    now = float(env.clock.seconds())
    return queue.enqueue_message(txn, env, account_id, None, mail_from, list(rcpt_to), raw, now, now)


# -- replies -------------------------------------------------------------------


@frozen
class Reply:
    """
    The SMTP reply for one recipient: the code and the reply as one line
    ("550 5.1.1 No such user").
    """

    code: int
    text: str

    @property
    def permanent(self) -> bool:
        return 500 <= self.code < 600

    @property
    def accepted(self) -> bool:
        return self.code in SUCCESS


_ENHANCED = re.compile(r"[245]\.\d{1,3}\.\d{1,3}$")


def one_line(code: int, lines: bytes | str) -> str:
    """
    A (multi-line) SMTP reply as one line, as RFC 8621 section 7 asks for
    DeliveryStatus.smtpReply: the code, then each line's text, with what a
    later line has in common with the first (such as the enhanced status
    code) stripped, joined by spaces.
    """
    if isinstance(lines, bytes):
        lines = lines.decode("utf-8", "replace")
    texts = [line.strip() for line in lines.splitlines()] or [""]
    first = texts[0].split()
    out = list(first)
    for text in texts[1:]:
        words = text.split()
        common = 0
        while common < min(len(words), len(first)) and words[common] == first[common]:
            common += 1
        out.extend(words[common:])
    return " ".join([f"{code:03d}", *out])


def temporary(enhanced: str, text: str) -> Reply:
    """
    A synthetic temporary failure that concerns no particular recipient.
    """
    return Reply(451, f"451 {enhanced} {' '.join(text.split())}")


# -- the message as sent ---------------------------------------------------------------


def wire_format(message: bytes) -> bytes:
    """
    The DATA octets for C{message}: CRLF line ends (bare LF and CR become
    CRLF), a leading dot doubled (RFC 5321 section 4.5.2), and a final
    CRLF, so the terminating "." goes on a line of its own.

    Twisted's client does this per chunk, which misses a dot at the start
    of a chunk; it is done here once for the whole message instead.
    """
    lines = re.split(rb"\r\n|\r|\n", message)
    if lines and lines[-1] == b"":
        lines.pop()
    return b"".join((b"." + line if line.startswith(b".") else line) + b"\r\n" for line in lines)


def strip_bcc(message: bytes) -> bytes:
    """
    C{message} without its Bcc header fields (RFC 8621 section 7: the
    server MUST remove them before delivery), continuation lines included;
    everything else is left as it is.
    """
    match = re.search(rb"\n(?=\r?\n)", message)
    split = match.end() if match else len(message)
    header, body = message[:split], message[split:]
    kept: list[bytes] = []
    dropping = False
    for line in header.splitlines(keepends=True):
        if line[:1] in (b" ", b"\t"):
            if not dropping:
                kept.append(line)
            continue
        dropping = line.split(b":", 1)[0].strip().lower() == b"bcc"
        if not dropping:
            kept.append(line)
    return b"".join(kept) + body


# -- the client -------------------------------------------------------------------


class _RelayClient(ESMTPClient):
    """
    One ESMTP session that sends one message and reports every recipient's
    reply to its factory.
    """

    def __init__(self, factory: _RelayFactory) -> None:
        relay = factory.relay
        super().__init__(
            relay.secret.encode("utf-8") if relay.secret is not None else None,
            relay.starttls_options,
            relay.helo.encode("ascii"),
            2 * len(factory.recipients) + 10,
        )
        self.factory = factory
        self.timeout = relay.timeout  # type: ignore[assignment]
        self.requireTransportSecurity = relay.tls == "starttls"
        self.requireAuthentication = relay.username is not None
        self.heloFallback = not (self.requireTransportSecurity or self.requireAuthentication)
        self._sent_from = False
        if relay.username is not None:
            user = relay.username.encode("utf-8")
            for authenticator in (CramMD5ClientAuthenticator, LOGINAuthenticator, PLAINAuthenticator):
                self.registerAuthenticator(authenticator(user))

    def getMailFrom(self) -> str | None:
        if self._sent_from:
            return None
        self._sent_from = True
        return self.factory.mail_from

    def getMailTo(self) -> list[bytes]:
        return [address.encode("ascii") for address in self.factory.recipients]

    def getMailData(self) -> Any:
        return io.BytesIO(self.factory.data)

    def transformChunk(self, chunk: bytes) -> bytes:
        # wire_format already made the octets ready for the wire.
        self.resetTimeout()
        return chunk

    def sentMail(self, code: int, resp: bytes, numOk: int, addresses: Any, log: Any) -> None:
        self.factory.sent(code, resp, addresses)

    def sendError(self, exc: Exception) -> None:
        super().sendError(exc)
        self.factory.failed(exc)


class _RelayFactory(protocol.ClientFactory):
    """
    Connects once (no retries) and fires C{result} with the replies once
    the connection is closed, so nothing of the session outlives it.
    """

    protocol = _RelayClient  # type: ignore[assignment]

    def __init__(self, relay: Relay, mail_from: str, recipients: Sequence[str], data: bytes) -> None:
        self.relay = relay
        self.mail_from = mail_from
        self.recipients = list(recipients)
        self.data = data
        self.result: defer.Deferred[dict[str, Reply]] = defer.Deferred(self._cancel)
        self.connector: Any = None
        self._replies: dict[str, Reply] | None = None
        self._fired = False

    def _cancel(self, result: Any) -> None:
        """
        Abandon the session (the service is stopping): the relay never saw
        the end of the message, so it is not sent.
        """
        self._fired = True
        if self.connector is not None:
            self.connector.disconnect()

    def buildProtocol(self, addr: Any) -> _RelayClient:
        return _RelayClient(self)

    def _outcome(self, replies: dict[str, Reply]) -> None:
        """
        Keep the first outcome of the session (an error after the relay
        answered the message, such as a timeout on QUIT, changes nothing).
        """
        if self._replies is None:
            self._replies = replies

    def _fire(self, otherwise: Reply) -> None:
        if self._fired:
            return
        self._fired = True
        replies = self._replies or {address: otherwise for address in self.recipients}
        self.result.callback(replies)

    def sent(self, code: int, resp: bytes, addresses: Any) -> None:
        if not addresses:
            # MAIL FROM was refused: the reply concerns every recipient.
            reply = Reply(code, one_line(code, resp))
            self._outcome({address: reply for address in self.recipients})
            return
        data_reply = Reply(code, one_line(code, resp))
        replies: dict[str, Reply] = {}
        for address, rcpt_code, rcpt_resp in addresses:
            name = address.decode("ascii") if isinstance(address, bytes) else str(address)
            if rcpt_code in SUCCESS and code not in SUCCESS:
                replies[name] = data_reply
            else:
                replies[name] = Reply(rcpt_code, one_line(rcpt_code, rcpt_resp))
        for address in self.recipients:
            replies.setdefault(address, temporary("4.4.2", "the relay gave no answer for this recipient"))
        self._outcome(replies)

    def failed(self, exc: Exception) -> None:
        if self._replies is not None:
            return
        if isinstance(exc, SMTPTimeoutError):
            reply = temporary("4.4.2", "the relay did not answer in time")
        elif isinstance(exc, SMTPClientError):
            detail = exc.resp.decode("utf-8", "replace") if isinstance(exc.resp, bytes) else str(exc.resp)
            prefix = f"{exc.code} " if exc.code and exc.code > 0 else ""
            reply = temporary("4.4.0", f"the relay session failed: {prefix}{detail}")
        else:
            reply = temporary("4.4.0", f"the relay session failed: {exc}")
        log.warn("SMTP relay {host}:{port}: {reply}", host=self.relay.host, port=self.relay.port, reply=reply.text)
        self._outcome({address: reply for address in self.recipients})

    def clientConnectionFailed(self, connector: Any, reason: Any) -> None:
        reply = temporary("4.4.1", f"cannot connect to the relay: {reason.getErrorMessage()}")
        if not self._fired:
            log.warn("SMTP relay {host}:{port}: {reply}", host=self.relay.host, port=self.relay.port, reply=reply.text)
        self._fire(reply)

    def clientConnectionLost(self, connector: Any, reason: Any) -> None:
        self._fire(temporary("4.4.2", f"the relay closed the connection: {reason.getErrorMessage()}"))


def _trust_root(ca_path: str | None) -> Any:
    if ca_path is None:
        return None
    with open(ca_path, "rb") as f:
        pem = f.read()
    end = b"-----END CERTIFICATE-----"
    blocks = [block + end for block in pem.split(end) if b"-----BEGIN CERTIFICATE-----" in block]
    return trustRootFromCertificates([Certificate.loadPEM(block) for block in blocks])


class Relay:
    """
    The SMTP relay of the configuration.

    @ivar tls: C{"starttls"}, C{"tls"} or C{"none"}.
    @ivar helo: the name jmapd gives in EHLO.
    """

    def __init__(
        self,
        reactor: Any,
        host: str,
        port: int,
        tls: str = "starttls",
        username: str | None = None,
        secret: str | None = None,
        timeout: float = 30.0,
        helo: str = "localhost",
        trust_root: Any = None,
    ) -> None:
        self.reactor = reactor
        self.host = host
        self.port = port
        self.tls = tls
        self.username = username
        self.secret = secret
        self.timeout = timeout
        self.helo = helo
        self._options = optionsForClientTLS(host, trustRoot=trust_root) if tls != "none" else None

    @classmethod
    def from_config(cls, config: Any, reactor: Any) -> Relay:
        """
        The relay C{config} names (C{smtp-relay-*}); the secret file is read
        here, once.
        """
        secret = config.smtp_relay_secret
        if secret is None and config.smtp_relay_secret_file is not None:
            with open(config.smtp_relay_secret_file, encoding="utf-8") as f:
                secret = f.readline().rstrip("\r\n")
        return cls(
            reactor,
            config.smtp_relay_host,
            config.smtp_relay_port,
            tls=config.smtp_relay_tls,
            username=config.smtp_relay_auth,
            secret=secret,
            timeout=config.smtp_relay_timeout,
            helo=helo_name(config),
            trust_root=_trust_root(config.smtp_relay_ca_path),
        )

    @property
    def starttls_options(self) -> Any:
        """
        The TLS options STARTTLS uses (none when TLS is implicit or off).
        """
        return self._options if self.tls == "starttls" else None

    def send(self, mail_from: str, recipients: Sequence[str], message: bytes) -> defer.Deferred[dict[str, Reply]]:
        """
        Relay C{message} from C{mail_from} to C{recipients} in one session.

        @return: a L{Deferred} firing with a L{Reply} for every recipient
            (it does not fail for SMTP or network errors: those are
            temporary replies).
        """
        factory = _RelayFactory(self, mail_from, recipients, wire_format(message))
        if self.tls == "tls":
            factory.connector = self.reactor.connectSSL(
                self.host, self.port, factory, self._options, timeout=self.timeout
            )
        else:
            factory.connector = self.reactor.connectTCP(self.host, self.port, factory, timeout=self.timeout)
        return factory.result


def helo_name(config: Any) -> str:
    """
    The name jmapd gives in EHLO: the host of jmap-url.
    """
    from urllib.parse import urlsplit

    url = getattr(config, "jmap_url", None)
    host = urlsplit(url).hostname if url else None
    if not host or not all(ord(c) < 128 for c in host):
        return "localhost"
    if ":" in host:
        return f"[IPv6:{host}]"
    if re.fullmatch(r"[0-9.]+", host):
        return f"[{host}]"
    return host
