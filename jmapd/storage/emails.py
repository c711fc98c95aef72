# -*- test-case-name: tests.storage.test_emails -*-
"""
Emails and Threads in the database: ingest, threading, keywords, Mailbox
membership and the counters behind the Mailbox counts.

A message is parsed once, when it enters the store (L{ingest}); what
Email/get needs for list views goes into columns, so reading an Email never
re-reads or re-parses its message.  Threading (RFC 8621 section 3) happens
at the same time: a message joins the Thread of an Email that shares a
message id with it and has the same normalised subject.  When a message
links several Threads, they are merged the only way the RFC allows, as
C{threadId} is immutable: the Emails that change Thread are destroyed and
created again under new ids.

The Mailbox counts (totalEmails, unreadEmails, totalThreads, unreadThreads)
are derived incrementally from C{mailbox_threads}, one row per (Mailbox,
Thread) with how many of the Thread's Emails are in the Mailbox and how many
of those are unread.  Every change adjusts those rows and hands the
resulting deltas to L{jmapd.storage.mailboxes.adjust_counts} once per
operation (a delivery group is one, see L{IngestBatch}); nothing is ever
recounted by scanning.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

import orjson
from attrs import frozen

from jmapd.mime.parse import parse_message
from jmapd.storage import blobs as blob_storage
from jmapd.storage import changelog, mailboxes, search
from jmapd.storage.changelog import CREATED, DESTROYED, UPDATED
from jmapd.storage.ids import ordered_id
from jmapd.storage.sql import chunks as _chunks
from jmapd.storage.sql import marks as _marks

EMAIL = "Email"
THREAD = "Thread"
#: The push type whose state changes only when a new Email arrives
#: (RFC 8621 section 1.5).
EMAIL_DELIVERY = "EmailDelivery"

#: Keywords that make an Email read for the unread counts.
_READ_KEYWORDS = frozenset({"$seen", "$draft"})

#: SQLite allows at least 999 parameters in one statement.
_ADDRESS_FIELDS = ("sender", "from", "to", "cc", "bcc", "replyTo")


def _dumps(value: Any) -> str:
    return orjson.dumps(value).decode("utf-8")


def _loads(text: Any) -> Any:
    return None if text is None else orjson.loads(text)


# -- subjects and message ids --------------------------------------------

# A reply or forward prefix ("Re:", "Fwd:", "AW:", "Re[2]:", "Re :") or a
# list tag ("[list]") at the start of a subject.
_PREFIX = re.compile(r"^\s*(?:(?:re|fwd?|aw|sv|antw|wg|vs)\s*(?:\[\d+\])?\s*:|\[[^\]]*\])", re.IGNORECASE)
_SPACE = re.compile(r"\s+")


def normalise_subject(subject: str | None) -> str:
    """
    The subject as threading compares it: reply, forward and list-tag
    prefixes stripped repeatedly, white space collapsed, case folded.
    """
    text = subject or ""
    while True:
        stripped = _PREFIX.sub("", text, count=1)
        if stripped == text:
            break
        text = stripped
    return _SPACE.sub(" ", text).strip().casefold()


def is_unread(keywords: Iterable[str]) -> bool:
    """
    An Email is unread when it has neither C{$seen} nor C{$draft}
    (RFC 8621 section 2, unreadEmails).
    """
    return not (_READ_KEYWORDS & set(keywords))


# -- times -----------------------------------------------------------------


def utc_date(ms: int) -> str:
    """
    A UTCDate (RFC 8620 section 1.4) for milliseconds since the epoch; the
    fraction is omitted when zero, as the RFC requires.
    """
    seconds, millis = divmod(int(ms), 1000)
    text = datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S")
    if millis:
        text += f".{millis:03d}".rstrip("0")
    return text + "Z"


_DATE = re.compile(
    r"(\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2})(?:\.(\d{1,9}))?(Z|[+-]\d{2}:\d{2})"
)


def parse_date_ms(value: Any, utc_only: bool = False) -> int | None:
    """
    Milliseconds since the epoch for a JMAP Date (or, with C{utc_only}, a
    UTCDate), or C{None} when the value is not one.  A zero fraction
    (".000Z", as JavaScript's toISOString writes) is accepted, although
    the RFC says servers omit it.
    """
    if not isinstance(value, str):
        return None
    match = _DATE.fullmatch(value)
    if match is None or (utc_only and match.group(3) != "Z"):
        return None
    offset = "+00:00" if match.group(3) == "Z" else match.group(3)
    try:
        when = datetime.fromisoformat(match.group(1) + offset)
    except ValueError:
        return None
    fraction = match.group(2) or ""
    return int(when.timestamp()) * 1000 + int((fraction + "000")[:3])


# -- what ingest stores ------------------------------------------------------


@frozen
class EmailRecord:
    """
    Everything stored about a message that its bytes determine: the parse
    done once at ingest, or copied from another Email with the same blob.
    """

    blob_id: str
    size: int
    sent_at: str | None
    subject: str | None
    has_attachment: bool
    preview: str
    message_id: list[str] | None
    in_reply_to: list[str] | None
    references: list[str] | None
    addresses: dict[str, Any]
    headers: list[dict[str, str]]
    structure: dict[str, Any]

    @classmethod
    def from_parsed(cls, blob_id: str, parsed: dict[str, Any]) -> EmailRecord:
        return cls(
            blob_id=blob_id,
            size=int(parsed["size"]),
            sent_at=parsed.get("sentAt"),
            subject=parsed.get("subject"),
            has_attachment=bool(parsed.get("hasAttachment")),
            preview=parsed.get("preview") or "",
            message_id=parsed.get("messageId"),
            in_reply_to=parsed.get("inReplyTo"),
            references=parsed.get("references"),
            addresses={name: parsed.get(name) for name in _ADDRESS_FIELDS},
            headers=parsed.get("headers") or [],
            structure=structure_of(parsed),
        )

    def message_ids(self) -> list[str]:
        """
        Every message id the message carries, for threading.
        """
        found: dict[str, None] = {}
        for ids in (self.message_id, self.in_reply_to, self.references):
            for msgid in ids or ():
                if msgid:
                    found[msgid] = None
        return list(found)


def structure_of(parsed: dict[str, Any]) -> dict[str, Any]:
    """
    The body structure part of a parsed message, as stored.
    """
    return {
        "bodyStructure": parsed.get("bodyStructure"),
        "textBody": parsed.get("textBody") or [],
        "htmlBody": parsed.get("htmlBody") or [],
        "attachments": parsed.get("attachments") or [],
    }


@frozen
class PreparedMessage:
    """
    A message made ready to become an Email, outside any transaction: its
    record, the values threading and the emails row take from it, already
    serialised, and its search document.  Delivery prepares messages in
    worker threads, several at once, so that the one transaction that
    files a group of them (they run one at a time) only writes.
    """

    record: EmailRecord
    thread_subject: str
    message_ids: list[str]
    sent_at_ms: int | None
    #: message_id, in_reply_to, refs, addresses, headers, structure as stored.
    serialised: tuple[str | None, str | None, str | None, str, str, str]
    #: C{None} when the caller indexes the Email itself.
    document: search.SearchDocument | None


def prepare_message(blob_id: str, raw: bytes, parsed: dict[str, Any] | None = None) -> PreparedMessage:
    """
    Everything ingest computes from a message's bytes (see
    L{PreparedMessage}); pure, for any thread.
    """
    if parsed is None:
        parsed = parse_message(raw)
    return _prepared(EmailRecord.from_parsed(blob_id, parsed), search.document_of(raw, parsed))


def _prepared(record: EmailRecord, document: search.SearchDocument | None) -> PreparedMessage:
    return PreparedMessage(
        record=record,
        thread_subject=normalise_subject(record.subject),
        message_ids=record.message_ids(),
        sent_at_ms=parse_date_ms(record.sent_at),
        serialised=(
            None if record.message_id is None else _dumps(record.message_id),
            None if record.in_reply_to is None else _dumps(record.in_reply_to),
            None if record.references is None else _dumps(record.references),
            _dumps(record.addresses),
            _dumps(record.headers),
            _dumps(record.structure),
        ),
        document=document,
    )


@frozen
class Created:
    """
    The server-set properties of a new Email (the /set, /import and /copy
    C{created} entry).
    """

    id: str
    blob_id: str
    thread_id: str
    size: int

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "blobId": self.blob_id, "threadId": self.thread_id, "size": self.size}


# -- the counters behind the Mailbox counts -------------------------------


class _Counts:
    """
    The Mailbox count changes of one operation, collected from the
    (Mailbox, Thread) rows it touches and written once by L{flush}.
    """

    def __init__(self, txn: Any, account_id: str) -> None:
        self.txn = txn
        self.account_id = account_id
        self.deltas: dict[str, list[int]] = {}

    def change(self, mailbox_id: str, thread_id: str, emails: int, unread: int) -> None:
        if emails == 0 and unread == 0:
            return
        txn = self.txn
        if emails == 0:
            # Only the unread count moves (a keyword changed, the Email
            # stays): one statement writes it and says what it became.
            rows = txn.fetchall(
                "UPDATE mailbox_threads SET unread = unread + ?"
                " WHERE account_id = ? AND mailbox_id = ? AND thread_id = ? RETURNING emails, unread",
                (unread, self.account_id, mailbox_id, thread_id),
            )
            new_emails, new_unread = (int(rows[0][0]), int(rows[0][1])) if rows else (0, unread)
            if not rows or new_unread < 0 or new_unread > new_emails:
                raise AssertionError(
                    f"mailbox_threads for {mailbox_id}/{thread_id} would become {new_emails}/{new_unread}"
                )
            self._add_delta(mailbox_id, 0, unread, new_emails, new_unread, new_emails, new_unread - unread)
            return
        if emails > 0 and 0 <= unread <= emails:
            # Adding can neither empty a row nor break its invariant: one
            # statement writes it and says what it was.
            rows = txn.fetchall(
                "INSERT INTO mailbox_threads (account_id, mailbox_id, thread_id, emails, unread)"
                " VALUES (?, ?, ?, ?, ?) ON CONFLICT (account_id, mailbox_id, thread_id) DO UPDATE SET"
                " emails = mailbox_threads.emails + excluded.emails,"
                " unread = mailbox_threads.unread + excluded.unread RETURNING emails, unread",
                (self.account_id, mailbox_id, thread_id, emails, unread),
            )
            new_emails, new_unread = int(rows[0][0]), int(rows[0][1])
            self._add_delta(mailbox_id, emails, unread, new_emails, new_unread, new_emails - emails, new_unread - unread)
            return
        row = txn.fetchone(
            "SELECT emails, unread FROM mailbox_threads WHERE account_id = ? AND mailbox_id = ? AND thread_id = ?",
            (self.account_id, mailbox_id, thread_id),
        )
        old_emails, old_unread = (int(row[0]), int(row[1])) if row else (0, 0)
        new_emails, new_unread = old_emails + emails, old_unread + unread
        if new_emails < 0 or new_unread < 0 or new_unread > new_emails:
            raise AssertionError(
                f"mailbox_threads for {mailbox_id}/{thread_id} would become {new_emails}/{new_unread}"
            )
        if new_emails == 0:
            txn.execute(
                "DELETE FROM mailbox_threads WHERE account_id = ? AND mailbox_id = ? AND thread_id = ?",
                (self.account_id, mailbox_id, thread_id),
            )
        elif row is None:
            txn.execute(
                "INSERT INTO mailbox_threads (account_id, mailbox_id, thread_id, emails, unread) VALUES (?, ?, ?, ?, ?)",
                (self.account_id, mailbox_id, thread_id, new_emails, new_unread),
            )
        else:
            txn.execute(
                "UPDATE mailbox_threads SET emails = ?, unread = ?"
                " WHERE account_id = ? AND mailbox_id = ? AND thread_id = ?",
                (new_emails, new_unread, self.account_id, mailbox_id, thread_id),
            )
        self._add_delta(mailbox_id, emails, unread, new_emails, new_unread, old_emails, old_unread)

    def _add_delta(
        self, mailbox_id: str, emails: int, unread: int, new_emails: int, new_unread: int, old_emails: int, old_unread: int
    ) -> None:
        delta = self.deltas.setdefault(mailbox_id, [0, 0, 0, 0])
        delta[0] += emails
        delta[1] += unread
        delta[2] += (new_emails > 0) - (old_emails > 0)
        delta[3] += (new_unread > 0) - (old_unread > 0)

    def snapshot(self) -> dict[str, list[int]]:
        return {mailbox_id: list(delta) for mailbox_id, delta in self.deltas.items()}

    def add_email(self, mailbox_ids: Iterable[str], thread_id: str, unread: bool, sign: int = 1) -> None:
        for mailbox_id in mailbox_ids:
            self.change(mailbox_id, thread_id, sign, sign * int(unread))

    def remove_email(self, mailbox_ids: Iterable[str], thread_id: str, unread: bool) -> None:
        self.add_email(mailbox_ids, thread_id, unread, -1)

    def move_email(
        self,
        old_mailboxes: Iterable[str],
        new_mailboxes: Iterable[str],
        thread_id: str,
        old_unread: bool,
        new_unread: bool,
    ) -> None:
        """
        An Email's Mailboxes or unread state change: one change per
        Mailbox, the net of taking it out and putting it back (a Mailbox
        it stays in sees only its unread count move; the thread counts
        come out as they would from the two steps).
        """
        net: dict[str, list[int]] = {}
        for mailbox_id in old_mailboxes:
            delta = net.setdefault(mailbox_id, [0, 0])
            delta[0] -= 1
            delta[1] -= int(old_unread)
        for mailbox_id in new_mailboxes:
            delta = net.setdefault(mailbox_id, [0, 0])
            delta[0] += 1
            delta[1] += int(new_unread)
        for mailbox_id in sorted(net):
            self.change(mailbox_id, thread_id, net[mailbox_id][0], net[mailbox_id][1])

    def flush(self, skip: Iterable[str] = ()) -> None:
        skipped = set(skip)
        deltas = {
            mailbox_id: (delta[0], delta[1], delta[2], delta[3])
            for mailbox_id, delta in self.deltas.items()
            if any(delta) and mailbox_id not in skipped
        }
        self.deltas = {}
        if deltas:
            mailboxes.adjust_counts(self.txn, self.account_id, deltas)


# -- reading -----------------------------------------------------------------

#: Columns of the emails table by name, for L{get_rows}.
COLUMNS = (
    "id",
    "thread_id",
    "blob_id",
    "size",
    "received_at",
    "sent_at",
    "subject",
    "has_attachment",
    "preview",
    "unread",
    "message_id",
    "in_reply_to",
    "refs",
    "addresses",
    "headers",
    "structure",
    "thread_subject",
    "sent_at_ms",
)


def get_rows(txn: Any, account_id: str, ids: Sequence[str] | None, columns: Sequence[str]) -> list[dict[str, Any]]:
    """
    The rows of these Emails (every Email with C{ids=None}) with the given
    columns (C{id} always), in no particular order.
    """
    wanted = ["id"] + [c for c in columns if c != "id"]
    for column in wanted:
        if column not in COLUMNS:
            raise ValueError(f"unknown email column {column!r}")
    select = "SELECT " + ", ".join(wanted) + " FROM emails WHERE account_id = ?"
    if ids is None:
        rows = txn.fetchall(select, (account_id,))
    else:
        rows = []
        for chunk in _chunks(list(ids)):
            rows.extend(txn.fetchall(select + f" AND id IN ({_marks(len(chunk))})", (account_id, *chunk)))
    return [dict(zip(wanted, row, strict=True)) for row in rows]


def count_emails(txn: Any, account_id: str) -> int:
    return int(txn.fetchvalue("SELECT count(*) FROM emails WHERE account_id = ?", (account_id,), 0))


def _by_email(txn: Any, table: str, column: str, account_id: str, ids: Sequence[str]) -> dict[str, dict[str, bool]]:
    found: dict[str, dict[str, bool]] = {email_id: {} for email_id in ids}
    for chunk in _chunks(list(ids)):
        for email_id, value in txn.fetchall(
            f"SELECT email_id, {column} FROM {table} WHERE account_id = ? AND email_id IN ({_marks(len(chunk))})",
            (account_id, *chunk),
        ):
            found[email_id][value] = True
    return found


def get_keywords(txn: Any, account_id: str, ids: Sequence[str]) -> dict[str, dict[str, bool]]:
    """
    The keywords of each Email, as the JMAP C{keywords} map.
    """
    return _by_email(txn, "email_keywords", "keyword", account_id, ids)


def get_mailbox_ids(txn: Any, account_id: str, ids: Sequence[str]) -> dict[str, dict[str, bool]]:
    """
    The Mailboxes of each Email, as the JMAP C{mailboxIds} map.
    """
    return _by_email(txn, "email_mailboxes", "mailbox_id", account_id, ids)


def thread_email_ids(txn: Any, account_id: str, thread_ids: Sequence[str] | None) -> dict[str, list[str]]:
    """
    The Emails of each existing Thread, oldest receivedAt first, then by
    id (RFC 8621 section 3).
    """
    found: dict[str, list[str]] = {}
    select = "SELECT thread_id, id FROM emails WHERE account_id = ?"
    order = " ORDER BY thread_id, received_at, id"
    if thread_ids is None:
        rows = txn.fetchall(select + order, (account_id,))
    else:
        rows = []
        for chunk in _chunks(list(thread_ids)):
            rows.extend(
                txn.fetchall(select + f" AND thread_id IN ({_marks(len(chunk))})" + order, (account_id, *chunk))
            )
    for thread_id, email_id in rows:
        found.setdefault(thread_id, []).append(email_id)
    return found


def count_threads(txn: Any, account_id: str) -> int:
    return int(txn.fetchvalue("SELECT count(*) FROM threads WHERE account_id = ?", (account_id,), 0))


def find_blob_email(txn: Any, account_id: str, blob_id: str) -> dict[str, Any] | None:
    """
    The stored parse of an Email of the account whose message is
    C{blob_id}, or C{None}.
    """
    row = txn.fetchone(
        "SELECT headers, structure FROM emails WHERE account_id = ? AND blob_id = ? LIMIT 1", (account_id, blob_id)
    )
    if row is None:
        return None
    return {"headers": _loads(row[0]), **_loads(row[1])}


def with_message_id(txn: Any, account_id: str, msgid: str) -> list[str]:
    """
    The ids of the account's Emails whose own Message-ID is C{msgid}
    (without angle brackets): not those that only refer to it in
    In-Reply-To or References, which the threading table holds too.
    """
    rows = txn.fetchall(
        "SELECT e.id, e.message_id FROM email_message_ids m JOIN emails e ON e.account_id = m.account_id"
        " AND e.id = m.email_id WHERE m.account_id = ? AND m.msgid = ?",
        (account_id, msgid),
    )
    return [row[0] for row in rows if msgid in (_loads(row[1]) or ())]


def blob_mailbox_ids(txn: Any, account_id: str, blob_id: str) -> set[str]:
    """
    The Mailboxes of the account's Emails whose message is C{blob_id}
    (what decides who else may read the blob).
    """
    rows = txn.fetchall(
        "SELECT m.mailbox_id FROM emails e JOIN email_mailboxes m ON m.account_id = e.account_id"
        " AND m.email_id = e.id WHERE e.account_id = ? AND e.blob_id = ?",
        (account_id, blob_id),
    )
    return {row[0] for row in rows}


def load_record(txn: Any, account_id: str, email_id: str) -> tuple[EmailRecord, int, dict[str, bool], dict[str, bool]] | None:
    """
    An Email's record with its receivedAt, mailboxIds and keywords (what
    a copy needs), or C{None}.
    """
    rows = get_rows(txn, account_id, [email_id], COLUMNS)
    if not rows:
        return None
    row = rows[0]
    addresses = _loads(row["addresses"])
    record = EmailRecord(
        blob_id=row["blob_id"],
        size=int(row["size"]),
        sent_at=row["sent_at"],
        subject=row["subject"],
        has_attachment=bool(row["has_attachment"]),
        preview=row["preview"],
        message_id=_loads(row["message_id"]),
        in_reply_to=_loads(row["in_reply_to"]),
        references=_loads(row["refs"]),
        addresses=addresses,
        headers=_loads(row["headers"]),
        structure=_loads(row["structure"]),
    )
    mailbox_ids = get_mailbox_ids(txn, account_id, [email_id])[email_id]
    keywords = get_keywords(txn, account_id, [email_id])[email_id]
    return record, int(row["received_at"]), mailbox_ids, keywords


# -- ingest and threading ----------------------------------------------------


def ingest(
    txn: Any,
    store: Any,
    account_id: str,
    raw: bytes,
    mailbox_ids: Iterable[str],
    keywords: Iterable[str],
    received_at: int,
    now: float,
    parsed: dict[str, Any] | None = None,
) -> Created:
    """
    Store a message and make it an Email of the account: the bytes become
    a blob the account keeps, the message is parsed (once; pass C{parsed}
    if the caller already has it), threaded and indexed for search
    (L{jmapd.storage.search}), and the Mailbox counts follow.

    @param store: the blob store (L{jmapd.blobs.store.FileBlobStore}).
    @param received_at: milliseconds since the epoch.
    """
    txn.lock_account(account_id)
    blob_id = store.put(raw)
    prepared = prepare_message(blob_id, raw, parsed)
    counts = _Counts(txn, account_id)
    created, docid = _store(txn, account_id, prepared, len(raw), mailbox_ids, keywords, received_at, now, counts)
    if not store.exists(blob_id):
        # Housekeeping deleted the same bytes (an expired upload of them)
        # between our put and our row (see blobs.add_blob): put them back.
        store.put(raw)
    if prepared.document is not None:
        search.index_document(txn, account_id, created.id, docid, prepared.document)
    changelog.touch_state(txn, account_id, EMAIL_DELIVERY)
    counts.flush()
    return created


class IngestBatch:
    """
    Many messages made Emails in one transaction (mail delivery files a
    group of them at once): each Email is written as by L{ingest}, but
    what every one would change again (the Mailbox counts with their
    changelog entries, the EmailDelivery state) is written once per
    account, by L{flush}, before the transaction commits.

    The search index entries are written by L{flush} too, all together
    and after the last savepoint: SQLite's FTS5 writes what it holds to
    disk as a new segment at every savepoint, so indexing each Email
    inside its own savepoint made one segment (and the merges that
    follow) per message instead of one per group.
    """

    def __init__(self, txn: Any) -> None:
        self.txn = txn
        self._counts: dict[str, _Counts] = {}
        # (account id, Email id, docid, document) of each Email to index.
        self._documents: list[tuple[str, str, int, search.SearchDocument]] = []

    def ingest(
        self,
        account_id: str,
        prepared: PreparedMessage,
        size: int,
        mailbox_ids: Iterable[str],
        keywords: Iterable[str],
        received_at: int,
        now: float,
    ) -> Created:
        """
        Make the already stored and durable blob C{prepared.record.blob_id}
        (of C{size} octets) an Email of the account.
        """
        counts = self._counts.get(account_id)
        if counts is None:
            counts = self._counts[account_id] = _Counts(self.txn, account_id)
        created, docid = _store(self.txn, account_id, prepared, size, mailbox_ids, keywords, received_at, now, counts)
        if prepared.document is not None:
            self._documents.append((account_id, created.id, docid, prepared.document))
        return created

    def savepoint(self) -> _BatchSavepoint:
        """
        C{with batch.savepoint(): ...} undoes what the block wrote, and
        its share of the counts, when it raises.
        """
        return _BatchSavepoint(self)

    def flush(self) -> None:
        """
        Write the search index entries, the Mailbox counts and the
        EmailDelivery state of every account that got an Email.
        """
        documents, self._documents = self._documents, []
        search.index_documents(self.txn, documents)
        counts, self._counts = self._counts, {}
        for account_id in sorted(counts):
            changelog.touch_state(self.txn, account_id, EMAIL_DELIVERY)
            counts[account_id].flush()


class _BatchSavepoint:
    """
    A savepoint of an L{IngestBatch}'s transaction that also takes back,
    when its block raises, the counts and index entries the block added.
    """

    def __init__(self, batch: IngestBatch) -> None:
        self._batch = batch
        self._savepoint = batch.txn.savepoint()
        self._saved: dict[str, dict[str, list[int]]] = {}
        self._indexed = 0

    def __enter__(self) -> None:
        self._saved = {account_id: counts.snapshot() for account_id, counts in self._batch._counts.items()}
        self._indexed = len(self._batch._documents)
        self._savepoint.__enter__()

    def __exit__(self, kind: Any, value: Any, tb: Any) -> None:
        self._savepoint.__exit__(kind, value, tb)
        if kind is not None:
            del self._batch._documents[self._indexed :]
            counts = self._batch._counts
            for account_id in list(counts):
                if account_id in self._saved:
                    counts[account_id].deltas = self._saved[account_id]
                else:
                    del counts[account_id]


def _store(
    txn: Any,
    account_id: str,
    prepared: PreparedMessage,
    size: int,
    mailbox_ids: Iterable[str],
    keywords: Iterable[str],
    received_at: int,
    now: float,
    counts: _Counts,
) -> tuple[Created, int]:
    """
    The account keeps the stored message's blob and gets an Email for it
    (see L{_insert}); not yet indexed for search.
    """
    txn.lock_account(account_id)
    blob_storage.add_blob(txn, account_id, prepared.record.blob_id, size, "message/rfc822", now, None)
    return _insert(txn, account_id, prepared, mailbox_ids, keywords, received_at, counts)


def insert_email(
    txn: Any,
    account_id: str,
    record: EmailRecord,
    mailbox_ids: Iterable[str],
    keywords: Iterable[str],
    received_at: int,
) -> Created:
    """
    Add an Email for an already stored message: find (or merge, or start)
    its Thread, write its rows and the changelog, adjust the counts.

    The caller has checked the Mailboxes exist and the keywords are valid
    and lower case.
    """
    # Threading and the counters read what they then change.
    txn.lock_account(account_id)
    counts = _Counts(txn, account_id)
    prepared = _prepared(record, None)
    created, _ = _insert(txn, account_id, prepared, mailbox_ids, keywords, received_at, counts)
    changelog.touch_state(txn, account_id, EMAIL_DELIVERY)
    counts.flush()
    return created


def _insert(
    txn: Any,
    account_id: str,
    prepared: PreparedMessage,
    mailbox_ids: Iterable[str],
    keywords: Iterable[str],
    received_at: int,
    counts: _Counts,
) -> tuple[Created, int]:
    """
    The rows and changelog entries of a new Email, and its count changes
    (in C{counts}, written by its caller); returns it and its docid.
    """
    txn.lock_account(account_id)
    record = prepared.record
    mailbox_ids = sorted(set(mailbox_ids))
    keywords = sorted(set(keywords))
    message_ids = prepared.message_ids
    thread_id, new_thread = _choose_thread(txn, account_id, counts, message_ids, prepared.thread_subject)
    email_id = ordered_id("M")
    unread = is_unread(keywords)
    docid = search.allocate_docid(txn, int(received_at), account_id)
    message_id, in_reply_to, refs, addresses, headers, structure = prepared.serialised
    txn.execute(
        "INSERT INTO emails (account_id, id, thread_id, blob_id, size, received_at, sent_at, sent_at_ms, subject,"
        " thread_subject, has_attachment, preview, unread, message_id, in_reply_to, refs, addresses, headers,"
        " structure, docid) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            account_id,
            email_id,
            thread_id,
            record.blob_id,
            record.size,
            int(received_at),
            record.sent_at,
            prepared.sent_at_ms,
            record.subject,
            prepared.thread_subject,
            int(record.has_attachment),
            record.preview,
            int(unread),
            message_id,
            in_reply_to,
            refs,
            addresses,
            headers,
            structure,
            docid,
        ),
    )
    if message_ids:
        txn.executemany(
            "INSERT INTO email_message_ids (account_id, msgid, email_id) VALUES (?, ?, ?)",
            [(account_id, msgid, email_id) for msgid in message_ids],
        )
    if keywords:
        txn.executemany(
            "INSERT INTO email_keywords (account_id, email_id, keyword) VALUES (?, ?, ?)",
            [(account_id, email_id, keyword) for keyword in keywords],
        )
    if mailbox_ids:
        txn.executemany(
            "INSERT INTO email_mailboxes (account_id, email_id, mailbox_id, docid) VALUES (?, ?, ?, ?)",
            [(account_id, email_id, mailbox_id, docid) for mailbox_id in mailbox_ids],
        )
    if not new_thread:
        txn.execute("UPDATE threads SET emails = emails + 1 WHERE account_id = ? AND id = ?", (account_id, thread_id))
    counts.add_email(mailbox_ids, thread_id, unread)
    changelog.record_change(txn, account_id, EMAIL, email_id, CREATED)
    return Created(email_id, record.blob_id, thread_id, record.size), docid


def _choose_thread(
    txn: Any, account_id: str, counts: _Counts, message_ids: list[str], thread_subject: str
) -> tuple[str, bool]:
    """
    The Thread a new message joins (recording its change), merging the
    Threads it links, and C{False}; or, when it links none, a new Thread,
    already counting its one Email, and C{True}.
    """
    linked: dict[str, int] = {}
    for chunk in _chunks(message_ids):
        # CROSS JOIN: SQLite joins in the order written, from the message
        # ids (a few index probes).  Left to itself, without statistics, it
        # scanned the account's Emails for the subject: every delivery then
        # read the whole mailbox.
        for thread_id, created_seq in txn.fetchall(
            "SELECT DISTINCT t.id, t.created_seq FROM email_message_ids m"
            " CROSS JOIN emails e CROSS JOIN threads t"
            f" WHERE m.account_id = ? AND m.msgid IN ({_marks(len(chunk))})"
            " AND e.account_id = m.account_id AND e.id = m.email_id AND e.thread_subject = ?"
            " AND t.account_id = e.account_id AND t.id = e.thread_id",
            (account_id, *chunk, thread_subject),
        ):
            linked[thread_id] = int(created_seq)
    if not linked:
        thread_id = ordered_id("T")
        created_seq = changelog.record_change(txn, account_id, THREAD, thread_id, CREATED)
        txn.execute(
            "INSERT INTO threads (account_id, id, created_seq, emails) VALUES (?, ?, ?, 1)",
            (account_id, thread_id, created_seq),
        )
        return thread_id, True
    # The oldest Thread survives a merge; ties (impossible with modseqs) by id.
    keep = min(linked, key=lambda t: (linked[t], t))
    for other in sorted(linked):
        if other != keep:
            _merge_thread(txn, account_id, counts, other, keep)
    changelog.record_change(txn, account_id, THREAD, keep, UPDATED)
    return keep, False


def _merge_thread(txn: Any, account_id: str, counts: _Counts, source: str, target: str) -> None:
    """
    Move every Email of Thread C{source} into C{target}: each is destroyed
    and created again with a new id (threadId is immutable), keeping its
    blob, Mailboxes, keywords and receivedAt.  C{source} is destroyed.
    """
    rows = txn.fetchall(
        "SELECT id, unread FROM emails WHERE account_id = ? AND thread_id = ? ORDER BY received_at, id",
        (account_id, source),
    )
    mailboxes_of = get_mailbox_ids(txn, account_id, [row[0] for row in rows])
    for old_id, unread in rows:
        member_of = sorted(mailboxes_of[old_id])
        counts.remove_email(member_of, source, bool(unread))
        fresh = ordered_id("M")
        txn.execute(
            "UPDATE emails SET id = ?, thread_id = ? WHERE account_id = ? AND id = ?",
            (fresh, target, account_id, old_id),
        )
        for table in ("email_keywords", "email_mailboxes", "email_message_ids"):
            txn.execute(
                f"UPDATE {table} SET email_id = ? WHERE account_id = ? AND email_id = ?", (fresh, account_id, old_id)
            )
        counts.add_email(member_of, target, bool(unread))
        changelog.record_change(txn, account_id, EMAIL, old_id, DESTROYED)
        changelog.record_change(txn, account_id, EMAIL, fresh, CREATED)
    txn.execute(
        "UPDATE threads SET emails = emails + ? WHERE account_id = ? AND id = ?", (len(rows), account_id, target)
    )
    txn.execute("DELETE FROM threads WHERE account_id = ? AND id = ?", (account_id, source))
    changelog.record_change(txn, account_id, THREAD, source, DESTROYED)


# -- changing and destroying -------------------------------------------------


def update_email(
    txn: Any,
    account_id: str,
    email_id: str,
    mailbox_ids: Iterable[str] | None = None,
    keywords: Iterable[str] | None = None,
) -> bool:
    """
    Replace an Email's Mailboxes and/or keywords (C{None}: unchanged),
    adjusting the counts; return whether anything changed.

    @raise KeyError: no such Email.
    """
    txn.lock_account(account_id)
    row = txn.fetchone(
        "SELECT thread_id, unread, docid FROM emails WHERE account_id = ? AND id = ?", (account_id, email_id)
    )
    if row is None:
        raise KeyError(email_id)
    thread_id, old_unread, docid = row[0], bool(row[1]), int(row[2])
    old_mailboxes = set(get_mailbox_ids(txn, account_id, [email_id])[email_id])
    old_keywords = set(get_keywords(txn, account_id, [email_id])[email_id])
    new_mailboxes = old_mailboxes if mailbox_ids is None else set(mailbox_ids)
    new_keywords = old_keywords if keywords is None else set(keywords)
    if new_mailboxes == old_mailboxes and new_keywords == old_keywords:
        return False
    new_unread = is_unread(new_keywords)
    counts = _Counts(txn, account_id)
    counts.move_email(old_mailboxes, new_mailboxes, thread_id, old_unread, new_unread)
    for keyword in sorted(old_keywords - new_keywords):
        txn.execute(
            "DELETE FROM email_keywords WHERE account_id = ? AND email_id = ? AND keyword = ?",
            (account_id, email_id, keyword),
        )
    added_keywords = sorted(new_keywords - old_keywords)
    if added_keywords:
        txn.executemany(
            "INSERT INTO email_keywords (account_id, email_id, keyword) VALUES (?, ?, ?)",
            [(account_id, email_id, keyword) for keyword in added_keywords],
        )
    for mailbox_id in sorted(old_mailboxes - new_mailboxes):
        txn.execute(
            "DELETE FROM email_mailboxes WHERE account_id = ? AND email_id = ? AND mailbox_id = ?",
            (account_id, email_id, mailbox_id),
        )
    added_mailboxes = sorted(new_mailboxes - old_mailboxes)
    if added_mailboxes:
        txn.executemany(
            "INSERT INTO email_mailboxes (account_id, email_id, mailbox_id, docid) VALUES (?, ?, ?, ?)",
            [(account_id, email_id, mailbox_id, docid) for mailbox_id in added_mailboxes],
        )
    if new_unread != old_unread:
        txn.execute(
            "UPDATE emails SET unread = ? WHERE account_id = ? AND id = ?", (int(new_unread), account_id, email_id)
        )
    changelog.record_change(txn, account_id, EMAIL, email_id, UPDATED)
    counts.flush()
    return True


def destroy_email(txn: Any, account_id: str, email_id: str, now: float, blob_ttl: float) -> bool:
    """
    Destroy an Email: out of its Mailboxes and Thread (the Thread goes when
    it was the last one), counts adjusted.  When no other Email of the
    account uses its message, the account's access to the blob becomes
    temporary (it expires after C{blob_ttl} seconds, like an upload); the
    bytes are never deleted here.

    @return: whether the Email existed.
    """
    txn.lock_account(account_id)
    counts = _Counts(txn, account_id)
    found = _destroy(txn, account_id, email_id, counts, now, blob_ttl)
    counts.flush()
    return found


def _destroy(txn: Any, account_id: str, email_id: str, counts: _Counts, now: float, blob_ttl: float) -> bool:
    row = txn.fetchone(
        "SELECT thread_id, unread, blob_id FROM emails WHERE account_id = ? AND id = ?", (account_id, email_id)
    )
    if row is None:
        return False
    thread_id, unread, blob_id = row[0], bool(row[1]), row[2]
    member_of = sorted(get_mailbox_ids(txn, account_id, [email_id])[email_id])
    counts.remove_email(member_of, thread_id, unread)
    for table in ("email_keywords", "email_mailboxes", "email_message_ids"):
        txn.execute(f"DELETE FROM {table} WHERE account_id = ? AND email_id = ?", (account_id, email_id))
    search.remove_email(txn, account_id, email_id)
    txn.execute("DELETE FROM emails WHERE account_id = ? AND id = ?", (account_id, email_id))
    changelog.record_change(txn, account_id, EMAIL, email_id, DESTROYED)
    txn.execute("UPDATE threads SET emails = emails - 1 WHERE account_id = ? AND id = ?", (account_id, thread_id))
    remaining = txn.fetchvalue("SELECT emails FROM threads WHERE account_id = ? AND id = ?", (account_id, thread_id), 0)
    if int(remaining) <= 0:
        txn.execute("DELETE FROM threads WHERE account_id = ? AND id = ?", (account_id, thread_id))
        changelog.record_change(txn, account_id, THREAD, thread_id, DESTROYED)
    else:
        changelog.record_change(txn, account_id, THREAD, thread_id, UPDATED)
    if txn.fetchone("SELECT 1 FROM emails WHERE account_id = ? AND blob_id = ? LIMIT 1", (account_id, blob_id)) is None:
        _release_blob(txn, account_id, blob_id, now + blob_ttl)
    return True


def _release_blob(txn: Any, account_id: str, blob_id: str, expires_at: float) -> None:
    """
    Make the account's access to a blob nothing references any more
    temporary, so the expiry timer drops it (and the file, once no account
    has it) after the usual upload lifetime.
    """
    txn.execute(
        "UPDATE blobs SET expires_at = ? WHERE account_id = ? AND blob_id = ? AND expires_at IS NULL",
        (expires_at, account_id, blob_id),
    )


def remove_mailbox(txn: Any, account_id: str, mailbox_id: str, now: float, blob_ttl: float) -> None:
    """
    Before a Mailbox is destroyed: destroy the Emails that are only in it,
    take it out of the Emails that are also elsewhere.  The other
    Mailboxes' counts do not change (their Emails stay); the counters of
    the destroyed Mailbox are dropped with it.
    """
    txn.lock_account(account_id)
    counts = _Counts(txn, account_id)
    email_ids = [
        row[0]
        for row in txn.fetchall(
            "SELECT email_id FROM email_mailboxes WHERE account_id = ? AND mailbox_id = ? ORDER BY email_id",
            (account_id, mailbox_id),
        )
    ]
    for email_id in email_ids:
        others = txn.fetchvalue(
            "SELECT count(*) FROM email_mailboxes WHERE account_id = ? AND email_id = ? AND mailbox_id <> ?",
            (account_id, email_id, mailbox_id),
            0,
        )
        if int(others) == 0:
            _destroy(txn, account_id, email_id, counts, now, blob_ttl)
        else:
            row = txn.fetchone(
                "SELECT thread_id, unread FROM emails WHERE account_id = ? AND id = ?", (account_id, email_id)
            )
            counts.remove_email([mailbox_id], row[0], bool(row[1]))
            txn.execute(
                "DELETE FROM email_mailboxes WHERE account_id = ? AND email_id = ? AND mailbox_id = ?",
                (account_id, email_id, mailbox_id),
            )
            changelog.record_change(txn, account_id, EMAIL, email_id, UPDATED)
    txn.execute(
        "DELETE FROM mailbox_threads WHERE account_id = ? AND mailbox_id = ?", (account_id, mailbox_id)
    )
    counts.flush(skip=[mailbox_id])
