# -*- test-case-name: tests.ingest.test_delivery -*-
"""
Filing delivered messages, many per transaction, never acknowledged
before they are durable.

Messages received over LMTP wait in a queue on the reactor thread.  One
thread (the service gives delivery one of its own: L{jmapd.ingest.service})
takes everything that waits, up to C{max_batch} messages, as a group, and
for the group, in order:

 1. I{prepares} each message: for each recipient the trace fields
    (Return-Path, Delivered-To, Received) are put in front of it, the
    result is parsed, and the parse is turned into the stored columns and
    the search document (L{jmapd.storage.emails.prepare_message});
 2. I{files} them in one write transaction: each recipient's copy becomes
    an Email in the account's Inbox, its bytes are written by the same
    transaction (the store's C{write_in}: the database store keeps them
    there, the file store stages them there until they are moved to
    their files, L{jmapd.blobs.writeback}), the vacation response is
    considered, and a DSN or MDN is recorded on the EmailSubmission it
    reports on (L{jmapd.mail.reports}); then the messages that arrived
    meanwhile are prepared and filed in the same transaction, until none
    waits (or the group holds C{max_batch});
 3. writes the Mailbox counts and EmailDelivery state of each account once
    for the group (L{jmapd.storage.emails.IngestBatch}), and commits: one
    flush (on SQLite, of its log) makes the group's bytes and rows durable
    together.

Only when its transaction has committed does the Deferred of each message
fire with one L{Reply} per recipient, and only then does LMTP send its
250s.  Each recipient is filed in its own savepoint, so one that fails
(its address was removed since RCPT, its account is gone) gets its own
error and the others are filed.  If the transaction as a whole
fails, every recipient of the group gets a temporary error, and the
MTA tries again later.

The disk cost per group of messages is then one flush, instead of two
fsyncs per message (its file and its directory) and a commit per batch.
Until 2026-11-26 the file store wrote the files during delivery and
flushed them before the commit, a second flush per group; staging the
bytes in the transaction measured 243 to 307 messages per second on the
delivery benchmark (docs/delivery.md).

Why one thread does all of it, rather than parsing in the worker pool and
syncing in a thread of its own beside the filing (as the first versions
did): every step but the waits for the disk holds the interpreter lock,
so parsing in other threads did not run beside the filing, it
interrupted it; each message crossed the reactor thread twice more; and
with each connection waiting for its reply, the groups stayed as small as
the connections were few.  Measured on the delivery benchmark
(docs/delivery.md, 4 connections): 231 to 304 messages per second with
the database store, server CPU 3.75 to 2.65 ms per message.
"""

from __future__ import annotations

import functools
import re
from collections import deque
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from email.utils import format_datetime
from typing import Any

import orjson
from attrs import define, field, frozen
from twisted.internet.defer import Deferred, succeed
from twisted.logger import Logger
from twisted.python.failure import Failure

from jmapd.blobs.store import blob_id_of
from jmapd.ingest import recipients
from jmapd.mail import reports, vacation
from jmapd.mime.parse import parse_message
from jmapd.storage import emails, mailboxes
from jmapd.storage import vacation as storage_vacation

log = Logger()

#: Most messages filed in one transaction.
MAX_BATCH = 200


@frozen
class Envelope:
    """
    What LMTP knows of a message besides its content.

    @ivar mail_from: the reverse-path, C{""} for C{<>}.
    @ivar recipients: C{(address, account id)} of each accepted RCPT, in
        order; the account id is what RCPT resolved (filing checks again).
    @ivar helo: what the client said in LHLO.
    @ivar peer: the client's IP address.
    @ivar tls: whether the message came over TLS.
    """

    mail_from: str
    recipients: tuple[tuple[str, str], ...]
    helo: str = ""
    peer: str = ""
    tls: bool = False

    def to_bytes(self) -> bytes:
        """
        The envelope as the delivery spool keeps it (JSON).
        """
        return orjson.dumps(
            {"mailFrom": self.mail_from, "recipients": self.recipients, "helo": self.helo,
             "peer": self.peer, "tls": self.tls}
        )

    @classmethod
    def from_bytes(cls, data: bytes | str) -> Envelope:
        value = orjson.loads(data)
        return cls(
            mail_from=value["mailFrom"],
            recipients=tuple((address, account_id) for address, account_id in value["recipients"]),
            helo=value["helo"],
            peer=value["peer"],
            tls=value["tls"],
        )


@frozen
class Reply:
    """
    The LMTP reply for one recipient: C{code} and the text after it
    (starting with the enhanced status code).
    """

    code: int
    text: str


def temporary_failure(text: str = "4.3.0 Temporary local failure, try again later") -> Reply:
    return Reply(451, text)


@frozen
class _Prepared:
    """
    One recipient's copy, parsed, ready to be filed.
    """

    address: str
    #: The account RCPT resolved the address to.
    account_id: str
    raw: bytes
    parsed: dict[str, Any]
    message: emails.PreparedMessage
    #: What a DSN or MDN says (L{reports.read_report}), else C{None}.
    report: reports.Report | None = None


@define
class _Message:
    envelope: Envelope
    # One per recipient: the trace fields to put in front of the message.
    heads: list[bytes]
    message: bytes
    # One per recipient, once prepared: a prepared copy, or the reply that
    # copy already has.
    copies: list[_Prepared | Reply] = field(factory=list)
    done: Deferred[list[Reply]] = field(factory=Deferred)
    # From the delivery spool: its sequence number, queue id and when it
    # was received.
    seq: int = 0
    queue_id: str = ""
    received: float = 0.0


@frozen
class _Account:
    """
    What one filing transaction reads once per account: its Inbox and
    whether its VacationResponse is on.
    """

    inbox: str
    vacation: bool


@functools.lru_cache(maxsize=4)
def _received_date(second: int) -> str:
    """
    The date of a Received field (whole seconds): the same for every
    message of that second, so it is formatted once.
    """
    return format_datetime(datetime.fromtimestamp(second, UTC))


def make_queue_id(now: float, count: int) -> str:
    """
    The id a Received field gives a message: when it was received (in
    milliseconds) and how many the process received before, in hex.
    """
    return f"{int(now * 1000):x}.{count:x}"


_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def _one_line(value: str) -> str:
    """
    C{value} with every control character (CR, LF, NUL, ...) made a
    space, to go in a header field the server writes.
    """
    return _CONTROL.sub(" ", value)


def trace_fields(envelope: Envelope, address: str, host: str, queue_id: str, now: float) -> bytes:
    """
    The header fields final delivery adds in front of a message: the
    Return-Path (RFC 5321 section 4.4), the Delivered-To of this recipient
    and a Received field.
    """
    # LHLO's argument is the rest of the command line as the client sent
    # it: a bare CR or LF in it would end the Received field early and
    # start a header field of the client's choosing in the stored message.
    helo = _one_line(envelope.helo) or "unknown"
    protocol = "LMTPS" if envelope.tls else "LMTP"
    date = _received_date(int(now))
    mail_from, address = _one_line(envelope.mail_from), _one_line(address)
    text = (
        f"Return-Path: <{mail_from}>\r\n"
        f"Delivered-To: {address}\r\n"
        f"Received: from {helo} ([{envelope.peer}])\r\n"
        f"\tby {host} (jmapd) with {protocol} id {queue_id}\r\n"
        f"\tfor <{address}>; {date}\r\n"
    )
    return text.encode("utf-8", "replace")


def inbox_of(txn: Any, account_id: str) -> str:
    """
    The Mailbox delivered mail goes to: the one with the inbox role; if
    the account has none, a top-level Mailbox named Inbox gets the role,
    or is created.  A top-level "Inbox" that has another role keeps it
    (a Mailbox has one role) and its name: two siblings must not share a
    name (RFC 8621 section 2), so the new one is "Inbox 2" (or 3, ...).
    """
    inbox = mailboxes.find_by_role(txn, account_id, "inbox")
    if inbox is not None:
        return inbox
    top_level = [m for m in mailboxes.get_mailboxes(txn, account_id) if m.parent_id is None]
    for mailbox in top_level:
        if mailbox.name.lower() == "inbox" and mailbox.role is None:
            mailboxes.update_mailbox(
                txn,
                account_id,
                mailboxes.Mailbox(mailbox.id, mailbox.name, None, "inbox", mailbox.sort_order, mailbox.is_subscribed),
            )
            return mailbox.id
    taken = {mailbox.name for mailbox in top_level}
    name = "Inbox"
    suffix = 2
    while name in taken:
        name = f"Inbox {suffix}"
        suffix += 1
    return mailboxes.add_mailbox(txn, account_id, name, role="inbox", sort_order=10).id


class Deliverer:
    """
    The delivery queue of one service (see the module docstring).

    @param env: the L{jmapd.environment.Environment}.
    @param resolver: the L{recipients.RecipientResolver} RCPT used; it
        learns the address version from every filing transaction.
    @param host: the host name written in Received fields.
    @param run_filing: C{run(fn, *args) -> Deferred} running a group's job
        in the thread that files (the service gives delivery a thread of
        its own); the worker pool's by default.
    """

    def __init__(
        self,
        env: Any,
        resolver: recipients.RecipientResolver,
        host: str,
        max_batch: int = MAX_BATCH,
        run_filing: Callable[..., Deferred[Any]] | None = None,
    ):
        self._env = env
        self._resolver = resolver
        self._host = host
        self._max_batch = max_batch
        self._run_filing = env.workers.run if run_filing is None else run_filing
        # Each copy's bytes are written in the filing transaction.
        self._write_in: Callable[[Any, bytes], str] = env.blobs.write_in
        # Received, waiting for the group being filed to be done.
        self._waiting: deque[_Message] = deque()
        self._filing = False
        self._idle: list[Deferred[None]] = []
        self._count = 0
        #: Transactions committed and messages filed, for logs and benchmarks.
        self.batches = 0
        self.messages = 0

    @property
    def busy(self) -> bool:
        return bool(self._waiting or self._filing)

    def deliver(self, envelope: Envelope, message: bytes) -> Deferred[list[Reply]]:
        """
        File C{message} for each recipient of C{envelope}.

        @return: a L{Deferred} firing, once every copy is durable or has
            failed, with one L{Reply} per recipient in envelope order.  It
            never fails.
        """
        env = self._env
        now = float(env.clock.seconds())
        self._count += 1
        queue_id = make_queue_id(now, self._count)
        heads = [
            trace_fields(envelope, address, self._host, queue_id, now) for address, _ in envelope.recipients
        ]
        item = _Message(envelope, heads, message)
        self._waiting.append(item)
        self._kick()
        return item.done

    def _kick(self) -> None:
        """
        Start the next group (everything received meanwhile, up to
        C{max_batch} messages) unless one is being filed: it starts the
        next one when it is done.
        """
        if self._filing or not self._waiting:
            return
        batch: list[_Message] = []
        while self._waiting and len(batch) < self._max_batch:
            batch.append(self._waiting.popleft())
        self._filing = True
        now = float(self._env.clock.seconds())
        d = self._run_filing(self._deliver_group, batch, now)

        def filed(result: tuple[list[list[Reply]], list[Callable[[], Any]]]) -> None:
            outcomes, callbacks = result
            for callback in callbacks:
                try:
                    callback()
                except Exception:
                    log.failure("after-commit callback of a delivery failed")
            self.batches += 1
            self.messages += len(batch)
            for item, replies in zip(batch, outcomes, strict=True):
                item.done.callback(replies)

        def failed(failure: Failure) -> None:
            log.failure("a delivery transaction of {count} messages failed", failure, count=len(batch))
            for item in batch:
                item.done.callback([temporary_failure() for _ in item.envelope.recipients])

        def next_group(_: Any) -> None:
            self._filing = False
            self._kick()
            self._check_idle()

        d.addCallbacks(filed, failed)
        d.addBoth(next_group)

    def _deliver_group(
        self, batch: list[_Message], now: float
    ) -> tuple[list[list[Reply]], list[Callable[[], Any]]]:
        """
        A group's job, in the filing thread: prepare its messages and file
        them in one transaction (L{_file}), which takes in the messages
        received meanwhile too.
        """
        self._prepare_all(batch)
        if not any(isinstance(copy_, _Prepared) for item in batch for copy_ in item.copies):
            # Every copy has its answer already: no transaction.
            return [[copy_ for copy_ in item.copies if isinstance(copy_, Reply)] for item in batch], []
        result: tuple[list[list[Reply]], list[Callable[[], Any]]]
        result = self._env.database.run_sync(self._file, batch, now, write=True)
        return result

    def _prepare_all(self, items: Sequence[_Message]) -> None:
        """
        Prepare each message (see L{_prepare}).
        """
        for item in items:
            item.copies = _prepare(item.envelope, item.heads, item.message)

    def _absorb(self, count: int) -> list[_Message]:
        """
        The messages received since the group started, up to
        C{max_batch} messages in the group with the C{count} it has (in
        the filing thread: the reactor thread only appends to the queue
        while a group is filed, and a deque's appends and pops are
        thread-safe).
        """
        more: list[_Message] = []
        while count + len(more) < self._max_batch:
            try:
                more.append(self._waiting.popleft())
            except IndexError:
                break
        return more

    def _file(
        self, txn: Any, batch: list[_Message], now: float
    ) -> tuple[list[list[Reply]], list[Callable[[], Any]]]:
        """
        The filing transaction (in the filing thread): the replies, and
        the after-commit callbacks, taken from the transaction so that they
        run on the reactor thread whichever way the transaction was run.

        Before it commits, it takes in (prepares, and files in the same
        transaction) the messages received while it ran, adding them to
        C{batch}, until none is waiting: with each connection waiting for
        its reply, those messages would otherwise wait for this commit and
        then have one of their own, and the groups would stay as small as
        the connections are few (4 connections: 2 and 2, alternately).
        """
        env = self._env
        version = recipients.addresses_version(txn)
        received_at = int(now * 1000)
        accounts: dict[str, _Account] = {}
        owners: dict[str, str | None] = {}
        filing = emails.IngestBatch(txn)
        outcomes: list[list[Reply]] = []
        while True:
            for item in batch[len(outcomes) :]:
                outcomes.append(self._file_message(txn, filing, item, received_at, now, accounts, owners))
            more = self._absorb(len(batch))
            if not more:
                break
            self._prepare_all(more)
            batch.extend(more)
        filing.flush()
        self._before_commit(txn, batch, outcomes, now)
        changed_states = txn.__dict__.get("changed_states")
        if changed_states:
            txn.after_commit(lambda: env.publish_states(changed_states))
        txn.after_commit(lambda: self._resolver.observe_version(version))
        callbacks = list(txn.after_commit_callbacks)
        del txn.after_commit_callbacks[:]
        return outcomes, callbacks

    def _before_commit(self, txn: Any, batch: Sequence[_Message], outcomes: Sequence[Sequence[Reply]],
                       now: float) -> None:
        """
        What a filing transaction writes after its messages (nothing here;
        the spool's filing records its mark, L{jmapd.ingest.filer}).
        """

    def _account_of(self, txn: Any, prepared: _Prepared, owners: dict[str, str | None]) -> str | None:
        """
        The account a copy is filed in: the one that owns its address now
        (C{None}: no account does), looked up once per transaction.
        """
        if prepared.address not in owners:
            owners[prepared.address] = recipients.lookup_account(txn, prepared.address)
        return owners[prepared.address]

    def _file_message(
        self,
        txn: Any,
        filing: emails.IngestBatch,
        item: _Message,
        received_at: int,
        now: float,
        accounts: dict[str, _Account],
        owners: dict[str, str | None],
    ) -> list[Reply]:
        """
        File each recipient's copy of one message, each in its own
        savepoint: one recipient that fails gets a temporary error, the
        others are filed.
        """
        replies = []
        for copy_ in item.copies:
            if isinstance(copy_, Reply):
                replies.append(copy_)
                continue
            changed = txn.__dict__.get("changed_states")
            before = None if changed is None else {account: dict(types) for account, types in changed.items()}
            try:
                with filing.savepoint():
                    replies.append(
                        self._file_one(txn, filing, item.envelope, copy_, received_at, now, accounts, owners)
                    )
            except Exception:
                log.failure("cannot file a message for {address}", address=copy_.address)
                accounts.clear()
                owners.clear()
                if before is None:
                    txn.__dict__.pop("changed_states", None)
                else:
                    txn.__dict__["changed_states"] = before
                replies.append(temporary_failure())
        return replies

    def _file_one(
        self,
        txn: Any,
        filing: emails.IngestBatch,
        envelope: Envelope,
        prepared: _Prepared,
        received_at: int,
        now: float,
        accounts: dict[str, _Account],
        owners: dict[str, str | None],
    ) -> Reply:
        """
        File one recipient's copy.  C{accounts} and C{owners} (address ->
        account id) keep what this transaction read already: a group of
        messages mostly goes to few recipients.
        """
        account_id = self._account_of(txn, prepared, owners)
        if account_id is None:
            return Reply(550, f"5.1.1 <{prepared.address}>: no such mailbox")
        account = accounts.get(account_id)
        if account is None:
            vacation_on = storage_vacation.get_vacation(txn, account_id).is_active(received_at)
            account = accounts[account_id] = _Account(inbox_of(txn, account_id), vacation_on)
        created = filing.ingest(
            account_id, prepared.message, len(prepared.raw), [account.inbox], [], received_at, now
        )
        # After ingest, whose add_blob holds the blob's lock until the
        # commit: the same bytes stored before and unreferenced since
        # cannot be deleted as such (expire_blobs) between this write,
        # which finds them and writes nothing, and the commit.
        self._write_in(txn, prepared.raw)
        if account.vacation:
            try:
                with txn.savepoint():
                    vacation.after_delivery(txn, self._env, account_id, envelope.mail_from, prepared.parsed, now)
            except Exception:
                log.failure("vacation reply for {account} failed; the message is delivered", account=account_id)
        if prepared.report is not None:
            try:
                with txn.savepoint():
                    reports.after_delivery(txn, account_id, prepared.report, created.blob_id)
            except Exception:
                log.failure("recording a {kind} for {account} failed; the message is delivered",
                            kind=prepared.report.kind, account=account_id)
        return Reply(250, f"2.0.0 <{prepared.address}> delivered as {created.id}")

    def idle(self) -> Deferred[None]:
        """
        A L{Deferred} firing when nothing is being prepared or filed.
        """
        if not self.busy:
            return succeed(None)
        d: Deferred[None] = Deferred()
        self._idle.append(d)
        return d

    def _check_idle(self) -> None:
        if not self.busy:
            waiting, self._idle = self._idle, []
            for d in waiting:
                d.callback(None)


def _prepare(envelope: Envelope, heads: list[bytes], message: bytes) -> list[_Prepared | Reply]:
    """
    Parse each recipient's copy, and make from the parse what the filing
    transaction writes (the stored columns, the search document), so that
    the transaction does no more than write.  A multipart/report (only
    those: other mail pays one comparison) is read as a DSN or MDN from
    the same parse.
    """
    copies: list[_Prepared | Reply] = []
    for (address, account_id), head in zip(envelope.recipients, heads, strict=True):
        raw = head + message
        try:
            blob_id = blob_id_of(raw)
            parsed = parse_message(raw)
            ready = emails.prepare_message(blob_id, raw, parsed)
        except Exception:
            log.failure("cannot prepare the message for {address}", address=address)
            copies.append(temporary_failure())
            continue
        report = None
        if parsed["bodyStructure"]["type"] == "multipart/report":
            report = reports.read_report(raw, parsed, envelope.mail_from)
        copies.append(_Prepared(address, account_id, raw, parsed, ready, report))
    return copies
