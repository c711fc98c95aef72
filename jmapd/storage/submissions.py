# -*- test-case-name: tests.storage.test_submissions -*-
"""
EmailSubmissions and the outgoing queue in the database.

The queue is a table, not memory: a message accepted by EmailSubmission/set
(or queued by the server, such as a vacation reply) is committed in the
same transaction as whatever made it, so it survives a restart and is sent
exactly when that transaction committed.  A sender claims a row for a
while (C{claimed_until}) before it talks to the relay, which keeps a
second sender and an undo away from a message in flight; a claim left by a
process that died lapses, and the message is tried again.

Every function takes a transaction first; none of them knows about JMAP
or SMTP.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import orjson
from attrs import frozen

from jmapd.storage import changelog
from jmapd.storage.changelog import CREATED, DESTROYED, UPDATED
from jmapd.storage.ids import new_id
from jmapd.storage.sql import chunks, marks

EMAIL_SUBMISSION = "EmailSubmission"


def _dumps(value: Any) -> str:
    return orjson.dumps(value).decode("utf-8")


def _loads(text: Any) -> Any:
    return None if text is None else orjson.loads(text)


# -- EmailSubmissions --------------------------------------------------------


@frozen
class Submission:
    """
    One EmailSubmission as stored; C{send_at} in milliseconds.
    """

    id: str
    identity_id: str
    email_id: str
    thread_id: str
    envelope: dict[str, Any]
    send_at: int
    undo_status: str
    delivery_status: dict[str, Any] | None
    dsn_blob_ids: list[str]
    mdn_blob_ids: list[str]


_COLUMNS = (
    "id, identity_id, email_id, thread_id, envelope, send_at, undo_status, delivery_status,"
    " dsn_blob_ids, mdn_blob_ids"
)


def _submission(row: Sequence[Any]) -> Submission:
    return Submission(
        id=row[0],
        identity_id=row[1],
        email_id=row[2],
        thread_id=row[3],
        envelope=_loads(row[4]),
        send_at=int(row[5]),
        undo_status=row[6],
        delivery_status=_loads(row[7]),
        dsn_blob_ids=_loads(row[8]) or [],
        mdn_blob_ids=_loads(row[9]) or [],
    )


def add_submission(
    txn: Any,
    account_id: str,
    identity_id: str,
    email_id: str,
    thread_id: str,
    envelope: dict[str, Any],
    send_at: int,
    undo_status: str,
    delivery_status: dict[str, Any] | None,
) -> str:
    submission_id = new_id("s")
    txn.execute(
        "INSERT INTO email_submissions (account_id, id, identity_id, email_id, thread_id, envelope, send_at,"
        " undo_status, delivery_status) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            account_id,
            submission_id,
            identity_id,
            email_id,
            thread_id,
            _dumps(envelope),
            send_at,
            undo_status,
            None if delivery_status is None else _dumps(delivery_status),
        ),
    )
    changelog.record_change(txn, account_id, EMAIL_SUBMISSION, submission_id, CREATED)
    return submission_id


def get_submissions(txn: Any, account_id: str, ids: Sequence[str] | None) -> list[Submission]:
    """
    The account's EmailSubmissions with these ids (all with C{None}).
    """
    if ids is None:
        rows = txn.fetchall(f"SELECT {_COLUMNS} FROM email_submissions WHERE account_id = ?", (account_id,))
        return [_submission(row) for row in rows]
    found: list[Submission] = []
    for chunk in chunks(ids):
        rows = txn.fetchall(
            f"SELECT {_COLUMNS} FROM email_submissions WHERE account_id = ? AND id IN ({marks(len(chunk))})",
            (account_id, *chunk),
        )
        found.extend(_submission(row) for row in rows)
    return found


def submissions_of_emails(txn: Any, account_id: str, email_ids: Sequence[str]) -> list[Submission]:
    """
    The account's EmailSubmissions that sent one of these Emails, oldest
    sendAt first.
    """
    found: list[Submission] = []
    for chunk in chunks(email_ids):
        rows = txn.fetchall(
            f"SELECT {_COLUMNS} FROM email_submissions WHERE account_id = ? AND email_id IN ({marks(len(chunk))})",
            (account_id, *chunk),
        )
        found.extend(_submission(row) for row in rows)
    return sorted(found, key=lambda s: (s.send_at, s.id))


def count_submissions(txn: Any, account_id: str) -> int:
    return int(txn.fetchvalue("SELECT count(*) FROM email_submissions WHERE account_id = ?", (account_id,), 0))


def set_status(
    txn: Any,
    account_id: str,
    submission_id: str,
    undo_status: str | None = None,
    delivery_status: dict[str, Any] | None = None,
    dsn_blob_ids: Sequence[str] | None = None,
    mdn_blob_ids: Sequence[str] | None = None,
) -> bool:
    """
    Change the undoStatus, deliveryStatus, dsnBlobIds and/or mdnBlobIds
    of a submission (those given) and record the change; C{False} when
    the submission no longer exists (it may be destroyed while its
    message is still queued).
    """
    sets, params = [], []
    if undo_status is not None:
        sets.append("undo_status = ?")
        params.append(undo_status)
    if delivery_status is not None:
        sets.append("delivery_status = ?")
        params.append(_dumps(delivery_status))
    if dsn_blob_ids is not None:
        sets.append("dsn_blob_ids = ?")
        params.append(_dumps(list(dsn_blob_ids)))
    if mdn_blob_ids is not None:
        sets.append("mdn_blob_ids = ?")
        params.append(_dumps(list(mdn_blob_ids)))
    if not sets:
        return True
    txn.execute(
        f"UPDATE email_submissions SET {', '.join(sets)} WHERE account_id = ? AND id = ?",
        (*params, account_id, submission_id),
    )
    if txn.rowcount == 0:
        return False
    changelog.record_change(txn, account_id, EMAIL_SUBMISSION, submission_id, UPDATED)
    return True


def destroy_submission(txn: Any, account_id: str, submission_id: str) -> bool:
    """
    Forget a submission; its queued message, if any, is still sent (RFC 8621
    section 7: destroying the record does not affect the delivery).
    """
    txn.execute("DELETE FROM email_submissions WHERE account_id = ? AND id = ?", (account_id, submission_id))
    if txn.rowcount == 0:
        return False
    changelog.record_change(txn, account_id, EMAIL_SUBMISSION, submission_id, DESTROYED)
    return True


#: EmailSubmission/query sort properties and their columns ("sentAt" is
#: the RFC's name; "sendAt" is the property it means).
SORT_COLUMNS = {"emailId": "email_id", "threadId": "thread_id", "sentAt": "send_at", "sendAt": "send_at"}


def query_submissions(
    txn: Any, account_id: str, where: str, params: Sequence[Any], order: Sequence[tuple[str, bool]]
) -> list[str]:
    """
    The ids of the account's submissions matching the SQL condition
    C{where} (over the email_submissions columns), sorted by C{order}
    (column, ascending) and then by id.
    """
    clauses = [f"{column} {'ASC' if ascending else 'DESC'}" for column, ascending in order]
    clauses.append("id ASC")
    rows = txn.fetchall(
        f"SELECT id FROM email_submissions WHERE account_id = ? AND ({where}) ORDER BY {', '.join(clauses)}",
        (account_id, *params),
    )
    return [row[0] for row in rows]


# -- the outgoing queue --------------------------------------------------------


@frozen
class QueuedMessage:
    """
    One message waiting for the relay.

    @ivar recipients: the envelope recipients not yet accepted or refused
        for good.
    """

    id: str
    account_id: str
    submission_id: str | None
    mail_from: str
    recipients: list[str]
    message: bytes
    created_at: float
    attempts: int


def enqueue(
    txn: Any,
    account_id: str,
    submission_id: str | None,
    mail_from: str,
    recipients: Sequence[str],
    message: bytes,
    now: float,
    release_at: float,
) -> str:
    """
    Put a message in the queue, to be relayed from C{release_at} on.
    """
    queue_id = new_id("q")
    txn.execute(
        "INSERT INTO outgoing_queue (id, account_id, submission_id, mail_from, recipients, message, created_at,"
        " next_attempt_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        (queue_id, account_id, submission_id, mail_from, _dumps(list(recipients)), message, now, release_at),
    )
    return queue_id


_QUEUE_COLUMNS = "id, account_id, submission_id, mail_from, recipients, message, created_at, attempts"


def _queued(row: Sequence[Any]) -> QueuedMessage:
    return QueuedMessage(
        id=row[0],
        account_id=row[1],
        submission_id=row[2],
        mail_from=row[3],
        recipients=_loads(row[4]),
        message=bytes(row[5]),
        created_at=float(row[6]),
        attempts=int(row[7]),
    )


def claim_due(txn: Any, now: float, lease: float, limit: int, skip: Sequence[str] = ()) -> list[QueuedMessage]:
    """
    Claim up to C{limit} messages that are due (and not claimed by a live
    sender) until C{now + lease}, and return them.

    @param skip: ids this sender is already working on.
    """
    rows = txn.fetchall(
        f"SELECT {_QUEUE_COLUMNS} FROM outgoing_queue"
        " WHERE next_attempt_at <= ? AND (claimed_until IS NULL OR claimed_until <= ?)"
        " ORDER BY next_attempt_at, id LIMIT ?",
        (now, now, limit + len(skip)),
    )
    skipped = set(skip)
    claimed: list[QueuedMessage] = []
    for message in (_queued(row) for row in rows if row[0] not in skipped):
        if len(claimed) == limit:
            break
        # The claim repeats the condition: on PostgreSQL another node may
        # have claimed the row since the SELECT (READ COMMITTED re-reads it
        # after waiting for that node's commit), and then this UPDATE
        # changes nothing and the message is that node's to send.
        txn.execute(
            "UPDATE outgoing_queue SET claimed_until = ?"
            " WHERE id = ? AND (claimed_until IS NULL OR claimed_until <= ?)",
            (now + lease, message.id, now),
        )
        if txn.rowcount == 1:
            claimed.append(message)
    return claimed


def next_due(txn: Any) -> float | None:
    """
    When the next message becomes due (or a claim on one lapses); C{None}
    when the queue is empty.
    """
    value = txn.fetchvalue(
        "SELECT min(CASE WHEN claimed_until IS NOT NULL AND claimed_until > next_attempt_at"
        " THEN claimed_until ELSE next_attempt_at END) FROM outgoing_queue"
    )
    return None if value is None else float(value)


def get_queued(txn: Any, queue_id: str) -> QueuedMessage | None:
    row = txn.fetchone(f"SELECT {_QUEUE_COLUMNS} FROM outgoing_queue WHERE id = ?", (queue_id,))
    return None if row is None else _queued(row)


def queued_for_submission(txn: Any, account_id: str, submission_id: str) -> tuple[str, float | None] | None:
    """
    The queue id and claim time of a submission's message, or C{None} when
    it is no longer queued.
    """
    row = txn.fetchone(
        "SELECT id, claimed_until FROM outgoing_queue WHERE account_id = ? AND submission_id = ?",
        (account_id, submission_id),
    )
    return None if row is None else (row[0], None if row[1] is None else float(row[1]))


def remove_queued(txn: Any, queue_id: str) -> None:
    txn.execute("DELETE FROM outgoing_queue WHERE id = ?", (queue_id,))


def reschedule(txn: Any, queue_id: str, recipients: Sequence[str], next_attempt_at: float, last_reply: str) -> None:
    """
    Keep a message for another attempt to the C{recipients} left, and
    release the claim on it.
    """
    txn.execute(
        "UPDATE outgoing_queue SET recipients = ?, next_attempt_at = ?, attempts = attempts + 1,"
        " claimed_until = NULL, last_reply = ? WHERE id = ?",
        (_dumps(list(recipients)), next_attempt_at, last_reply, queue_id),
    )


def release(txn: Any, queue_ids: Sequence[str]) -> None:
    """
    Give up the claims on these messages without an attempt (a sender that
    stops before it got to them).
    """
    for queue_id in queue_ids:
        txn.execute("UPDATE outgoing_queue SET claimed_until = NULL WHERE id = ?", (queue_id,))


def queue_length(txn: Any) -> int:
    return int(txn.fetchvalue("SELECT count(*) FROM outgoing_queue", (), 0))
