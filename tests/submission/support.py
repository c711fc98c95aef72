"""
A real SMTP relay for tests: Twisted's ESMTP server on 127.0.0.1 port 0
that records every message it accepts and answers as the test scripts it
to (refuse some recipients, refuse the DATA, require AUTH, offer STARTTLS
or speak implicit TLS); and helpers that start jmapd with sending on and a
queue service driven by a L{task.Clock}.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from attrs import define, field
from twisted.cred.checkers import InMemoryUsernamePasswordDatabaseDontUse
from twisted.cred.portal import IRealm, Portal
from twisted.internet import defer, protocol, reactor, ssl, task
from twisted.internet.interfaces import ISSLTransport
from twisted.mail.imap4 import PLAINCredentials
from twisted.mail.smtp import ESMTP, IMessage, IMessageDelivery, LOGINCredentials, SMTPBadRcpt, SMTPBadSender
from zope.interface import implementer

from jmapd.config import default_config
from jmapd.ingest import recipients
from jmapd.mail import identity as identity_module
from jmapd.mail import submission as submission_module
from jmapd.protocol import core
from jmapd.protocol.engine import CORE, Principal, Registry
from jmapd.storage import accounts as _accounts
from jmapd.storage import identities as identity_storage
from jmapd.submission import SUBMISSION
from jmapd.submission.queue import QueueService
from jmapd.submission.relay import Relay, _trust_root
from tests.mail.test_email_support import MailTestCase
from tests.protocol.test_engine import run_request
from tests.test_endpoints import make_certificate

MAIL = "urn:ietf:params:jmap:mail"
USING = [CORE, MAIL, SUBMISSION]


@define
class Received:
    """
    One message the relay accepted.
    """

    helo: bytes
    mail_from: str
    rcpt_to: list[str]
    data: bytes
    tls: bool
    user: str | None


@define
class Session:
    """
    What one SMTP connection did, accepted message or not.
    """

    tls: bool = False
    user: str | None = None
    commands: list[bytes] = field(factory=list)


@implementer(IMessage)
class _Message:
    def __init__(self, relay: RecordingRelay, delivery: _Delivery) -> None:
        self.relay = relay
        self.delivery = delivery
        self.lines: list[bytes] = []
        self.done = False

    def lineReceived(self, line: bytes) -> None:
        self.lines.append(line)

    def eomReceived(self) -> defer.Deferred[None]:
        # One message object serves every recipient of the transaction,
        # so the server calls this once per recipient: record it once.
        if not self.done:
            self.done = True
            self.relay._data_done(self.delivery, b"\r\n".join(self.lines) + b"\r\n")
        return defer.succeed(None)

    def connectionLost(self) -> None:
        pass


@implementer(IMessageDelivery)
class _Delivery:
    def __init__(self, relay: RecordingRelay, proto: _RelayServer, user: str | None) -> None:
        self.relay = relay
        self.proto = proto
        self.user = user
        self.mail_from = ""
        self.rcpt_to: list[str] = []
        self.message: _Message | None = None

    def receivedHeader(self, helo: Any, origin: Any, recipients: Any) -> None:
        return None

    def validateFrom(self, helo: Any, origin: Any) -> Any:
        self.mail_from = str(origin)
        self.rcpt_to = []
        self.message = None
        answer = self.relay.mail_from_reply(self.mail_from) if self.relay.mail_from_reply else None
        if answer is not None:
            raise SMTPBadSender(origin, answer[0], answer[1])
        return origin

    def validateTo(self, user: Any) -> Callable[[], _Message]:
        address = str(user.dest)
        answer = self.relay.rcpt_reply(address, self.relay.sessions_count) if self.relay.rcpt_reply else None
        if answer is not None:
            raise SMTPBadRcpt(user, answer[0], answer[1])
        self.rcpt_to.append(address)

        def make() -> _Message:
            if self.message is None:
                self.message = _Message(self.relay, self)
            return self.message

        return make


@implementer(IRealm)
class _Realm:
    def __init__(self, relay: RecordingRelay) -> None:
        self.relay = relay
        self.proto: Any = None

    def requestAvatar(self, avatar_id: Any, mind: Any, *interfaces: Any) -> Any:
        if IMessageDelivery not in interfaces:
            raise NotImplementedError()
        name = avatar_id.decode() if isinstance(avatar_id, bytes) else avatar_id
        self.relay.sessions[-1].user = name
        return IMessageDelivery, _Delivery(self.relay, self.proto, name), lambda: None


class _RelayServer(ESMTP):
    """
    ESMTP that can answer the end of DATA with a scripted code.
    """

    relay: RecordingRelay

    def lineReceived(self, line: bytes) -> Any:
        if self.mode == "COMMAND":
            self.relay.sessions[-1].commands.append(line.split(b" ", 1)[0].upper())
        return super().lineReceived(line)

    def _messageHandled(self, resultList: Any) -> None:
        answer = self.relay.data_reply
        if answer is not None:
            self.sendCode(answer[0], answer[1].encode())
        else:
            self.sendCode(250, b"2.0.0 Ok: queued")

    def connectionMade(self) -> None:
        super().connectionMade()
        self.relay._open.add(self)

    def connectionLost(self, reason: Any) -> None:
        super().connectionLost(reason)
        self.relay._connection_closed(self)

    def ext_STARTTLS(self, rest: bytes) -> None:
        super().ext_STARTTLS(rest)
        self.relay.sessions[-1].tls = True


class _Factory(protocol.ServerFactory):
    def __init__(self, relay: RecordingRelay) -> None:
        self.relay = relay

    def buildProtocol(self, addr: Any) -> _RelayServer:
        relay = self.relay
        relay.sessions.append(Session(tls=relay.implicit_tls))
        challengers = {b"LOGIN": LOGINCredentials, b"PLAIN": PLAINCredentials} if relay.users else None
        proto = _RelayServer(challengers, relay.starttls_options)
        proto.relay = relay
        proto.factory = self
        proto.host = b"relay.test"
        if relay.users:
            realm = _Realm(relay)
            realm.proto = proto
            checker = InMemoryUsernamePasswordDatabaseDontUse(**relay.users)
            proto.portal = Portal(realm, [checker])
        else:
            proto.delivery = _Delivery(relay, proto, None)
        return proto


class RecordingRelay:
    """
    An SMTP relay on 127.0.0.1 that records what it accepts.

    @ivar rcpt_reply: C{(address, session number) -> (code, text) | None}:
        the answer to a RCPT TO (None accepts it).
    @ivar data_reply: C{(code, text)} to answer the end of DATA with
        instead of 250.
    @ivar mail_from_reply: C{address -> (code, text) | None} for MAIL FROM.
    @ivar users: user name -> password: AUTH (LOGIN, PLAIN) is offered and
        required.
    @ivar tls: None, "starttls" (offered) or "tls" (implicit).
    """

    def __init__(
        self, testcase: Any, users: dict[str, str] | None = None, tls: str | None = None
    ) -> None:
        self.testcase = testcase
        self.users = {k: v.encode() for k, v in (users or {}).items()}
        self.tls = tls
        self.received: list[Received] = []
        self.sessions: list[Session] = []
        self.rcpt_reply: Callable[[str, int], tuple[int, str] | None] | None = None
        self.mail_from_reply: Callable[[str], tuple[int, str] | None] | None = None
        self.data_reply: tuple[int, str] | None = None
        self._waiting: list[defer.Deferred[Received]] = []
        self._open: set[Any] = set()
        self._all_closed: list[defer.Deferred[None]] = []
        self.cert_path: str | None = None
        self.starttls_options: Any = None
        self.implicit_tls = tls == "tls"
        self.port: Any = None
        if tls is not None:
            self.cert_path, key_path = make_certificate(os.path.abspath(testcase.mktemp()))
            with open(self.cert_path, "rb") as f:
                cert = f.read()
            with open(key_path, "rb") as f:
                key = f.read()
            options = ssl.PrivateCertificate.loadPEM(cert + key).options()
            if tls == "starttls":
                self.starttls_options = options
            self._server_options = options

    @property
    def sessions_count(self) -> int:
        return len(self.sessions)

    def start(self) -> int:
        factory = _Factory(self)
        if self.implicit_tls:
            self.port = reactor.listenSSL(0, factory, self._server_options, interface="127.0.0.1")
        else:
            self.port = reactor.listenTCP(0, factory, interface="127.0.0.1")
        self.testcase.addCleanup(self.port.stopListening)
        self.testcase.addCleanup(self.closed)
        return int(self.port.getHost().port)

    def closed(self) -> defer.Deferred[None]:
        """
        Fires when no client is connected any more.
        """
        d: defer.Deferred[None] = defer.Deferred()
        self._all_closed.append(d)
        self._connection_closed(None)
        return d

    def _connection_closed(self, proto: Any) -> None:
        self._open.discard(proto)
        if not self._open:
            waiting, self._all_closed = self._all_closed, []
            for d in waiting:
                d.callback(None)

    def _data_done(self, delivery: _Delivery, data: bytes) -> None:
        transport = delivery.proto.transport if delivery.proto is not None else None
        tls = self.sessions[-1].tls or (transport is not None and ISSLTransport.providedBy(transport))
        received = Received(
            helo=delivery.proto._helo[0] if delivery.proto is not None and delivery.proto._helo else b"",
            mail_from=delivery.mail_from,
            rcpt_to=list(delivery.rcpt_to),
            data=data,
            tls=bool(tls),
            user=delivery.user,
        )
        if self.data_reply is None:
            self.received.append(received)
        waiting, self._waiting = self._waiting, []
        for d in waiting:
            d.callback(received)

    def relay_for(self, reactor_: Any = reactor, **changes: Any) -> Relay:
        """
        A L{Relay} client for this server (trusting its certificate).
        """
        settings: dict[str, Any] = {
            "host": "127.0.0.1",
            "port": self.port.getHost().port,
            "tls": self.tls or "none",
            "timeout": 10.0,
            "helo": "jmapd.test",
            "trust_root": _trust_root(self.cert_path) if self.cert_path else None,
        }
        settings.update(changes)
        return Relay(reactor_, **settings)


def submission_registry(config: Any) -> Registry:
    """
    The registry of a server with sending on, whatever build_registry
    does with the configuration.
    """
    from jmapd import mail

    registry = Registry()
    core.register(registry)
    mail.register(registry)
    identity_module.register(registry, config)
    submission_module.register(registry, config)
    return registry


def sending_config(relay_port: int, **changes: Any) -> dict[str, Any]:
    """
    The configuration attributes that point jmapd at a test relay.
    """
    settings: dict[str, Any] = {
        "smtp_relay_host": "127.0.0.1",
        "smtp_relay_port": relay_port,
        "smtp_relay_tls": "none",
        "smtp_relay_timeout": 10.0,
    }
    settings.update(changes)
    return settings


async def start_sending_server(testcase: Any, relay: RecordingRelay, **changes: Any) -> Any:
    """
    Start jmapd (through the test case's start_server) with sending
    through C{relay}; its queue service runs on a L{task.Clock} set to the
    current time, which also becomes the server's clock.

    @return: (server, clock, queue service).
    """
    settings = sending_config(relay.port.getHost().port, **changes)
    settings.setdefault("db_path", os.path.abspath(testcase.mktemp()))
    probe = default_config(**settings)
    server = await testcase.start_server(registry=submission_registry(probe), **settings)
    clock = task.Clock()
    clock.advance(reactor.seconds())
    queue = replace_queue(testcase, server, clock, relay.relay_for())
    return server, clock, queue


def replace_queue(testcase: Any, server: Any, clock: Any, relay: Relay, **kwargs: Any) -> QueueService:
    """
    Stop the queue service the server runs (if it has one) and start one
    on C{clock} with C{relay}; C{clock} becomes the server's clock too, so
    sendAt, holds and backoff are all driven by it.
    """
    try:
        existing = server.service.getServiceNamed(QueueService.name)
    except KeyError:
        existing = None
    if existing is not None:
        existing.disownServiceParent()
    server.env.clock = clock
    queue = QueueService(server.env, reactor, clock=clock, relay=relay, **kwargs)
    queue.setServiceParent(server.service)
    testcase.addCleanup(lambda: queue.stopService() if queue.running else None)
    return queue


__all__ = [
    "RecordingRelay",
    "Received",
    "USING",
    "replace_queue",
    "sending_config",
    "start_sending_server",
    "submission_registry",
]


# -- a store without a network, for method tests ----------------------------------


class SubmissionStoreTestCase(MailTestCase):
    """
    A MailTestCase with sending on (smtp-relay-host set, no relay running:
    messages stay in the queue) and Identity and EmailSubmission
    registered; every account gets the address C{<name>@example.com}.
    """

    config: dict[str, Any] = {"smtp_relay_host": "relay.invalid"}

    def setUp(self) -> None:
        super().setUp()
        identity_module.register(self.env.registry, self.env.config)
        submission_module.register(self.env.registry, self.env.config)

    def add_account(self, name: str, addresses: tuple[str, ...] | None = None) -> str:
        if addresses is None:
            addresses = (f"{name}@example.com",)
        account = self.env.database.run_sync(_accounts.add_account, name, None, list(addresses), write=True)
        self.principals[name] = Principal(account.id, name)
        return str(account.id)

    def calls(self, calls: list[Any], who: str = "alice", created_ids: Any = None) -> list[Any]:
        response = run_request(self.env, self.principals[who], calls, USING, created_ids=created_ids)
        return response["methodResponses"]  # type: ignore[no-any-return]

    def add_address(self, address: str, who: str = "alice") -> None:
        """
        Give the account an alias, as C{jmapd-admin account alias add}
        does.
        """
        self.run_sync(recipients.add_alias, who, address)

    def remove_address(self, address: str, who: str = "alice") -> None:
        """
        Take an address from the account: an alias as C{jmapd-admin account
        alias remove} does; a main address (which no command removes) in
        the database, bringing the Identities in line as that command does.
        """
        if address.lower() in self.run_sync(recipients.list_aliases, who):
            self.run_sync(recipients.remove_alias, who, address)
            return
        account_id = self.principals[who].account_id

        def remove(txn: Any) -> None:
            txn.execute("DELETE FROM account_addresses WHERE address = ?", (address.lower(),))
            identity_storage.sync_identities(txn, account_id)

        self.run_sync(remove)

    def identities(self, who: str = "alice") -> list[dict[str, Any]]:
        return self.call("Identity/get", {"ids": None}, who)["list"]  # type: ignore[no-any-return]

    def identity_for(self, address: str, who: str = "alice") -> str:
        [found] = [i for i in self.identities(who) if i["email"] == address and not i["mayDelete"]]
        return str(found["id"])
