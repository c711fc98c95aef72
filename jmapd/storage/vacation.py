# -*- test-case-name: tests.mail.test_vacation -*-
"""
The VacationResponse of each account and the senders it has answered.

An account has exactly one VacationResponse (RFC 8621 section 8); until it
is first changed it is the default one (disabled, everything else null),
which needs no row.  The rules (what a valid date is, when to reply) are
L{jmapd.mail.vacation}'s; this module stores what it is given.
"""

from __future__ import annotations

from typing import Any

from attrs import frozen

from jmapd.storage import changelog

#: The type name of VacationResponse changes in the changelog (and its state).
TYPE_NAME = "VacationResponse"

#: The id of the one VacationResponse of an account.
SINGLETON = "singleton"


@frozen
class Vacation:
    """
    One account's VacationResponse in storage terms.  The dates are kept
    both as a UTCDate (in the normal form /set made of what the client
    sent) and in milliseconds, which /get renders.
    """

    is_enabled: bool = False
    from_date: str | None = None
    from_ms: int | None = None
    to_date: str | None = None
    to_ms: int | None = None
    subject: str | None = None
    text_body: str | None = None
    html_body: str | None = None

    def is_active(self, now_ms: int) -> bool:
        """
        Whether a message arriving at C{now_ms} gets the vacation response:
        enabled, on or after fromDate and before toDate (each when set).
        """
        if not self.is_enabled:
            return False
        if self.from_ms is not None and now_ms < self.from_ms:
            return False
        if self.to_ms is not None and now_ms >= self.to_ms:
            return False
        return True


_COLUMNS = "is_enabled, from_date, from_ms, to_date, to_ms, subject, text_body, html_body"


def get_vacation(txn: Any, account_id: str) -> Vacation:
    """
    The account's VacationResponse (the default one when never set).
    """
    row = txn.fetchone(f"SELECT {_COLUMNS} FROM vacation_responses WHERE account_id = ?", (account_id,))
    if row is None:
        return Vacation()
    return Vacation(
        is_enabled=bool(row[0]),
        from_date=row[1],
        from_ms=None if row[2] is None else int(row[2]),
        to_date=row[3],
        to_ms=None if row[4] is None else int(row[4]),
        subject=row[5],
        text_body=row[6],
        html_body=row[7],
    )


def set_vacation(txn: Any, account_id: str, vacation: Vacation) -> None:
    """
    Store the account's VacationResponse, record its update and forget
    whom the previous one answered: a new message deserves to be sent
    once to everybody.
    """
    values = (
        int(vacation.is_enabled),
        vacation.from_date,
        vacation.from_ms,
        vacation.to_date,
        vacation.to_ms,
        vacation.subject,
        vacation.text_body,
        vacation.html_body,
    )
    txn.execute(
        f"INSERT INTO vacation_responses (account_id, {_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
        " ON CONFLICT (account_id) DO UPDATE SET is_enabled = excluded.is_enabled,"
        " from_date = excluded.from_date, from_ms = excluded.from_ms, to_date = excluded.to_date,"
        " to_ms = excluded.to_ms, subject = excluded.subject, text_body = excluded.text_body,"
        " html_body = excluded.html_body",
        (account_id, *values),
    )
    txn.execute("DELETE FROM vacation_replies WHERE account_id = ?", (account_id,))
    changelog.record_change(txn, account_id, TYPE_NAME, SINGLETON, changelog.UPDATED)


def last_reply(txn: Any, account_id: str, sender: str) -> float | None:
    """
    When C{sender} (lower case) last got an auto-reply from the account,
    in seconds since the epoch, or C{None}.
    """
    value = txn.fetchvalue(
        "SELECT replied_at FROM vacation_replies WHERE account_id = ? AND sender = ?", (account_id, sender)
    )
    return None if value is None else float(value)


def record_reply(txn: Any, account_id: str, sender: str, now: float) -> None:
    """
    Remember that C{sender} (lower case) got an auto-reply at C{now}.
    """
    txn.execute(
        "INSERT INTO vacation_replies (account_id, sender, replied_at) VALUES (?, ?, ?)"
        " ON CONFLICT (account_id, sender) DO UPDATE SET replied_at = excluded.replied_at",
        (account_id, sender, now),
    )
