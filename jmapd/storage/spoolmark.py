# -*- test-case-name: tests.ingest.test_spool -*-
"""
How far each delivery spool has been filed, and the copies it could not
file (L{jmapd.ingest.spool}).

Both are written by the transaction that files the messages, so they are
committed together with them: a spooled message is in the mailboxes, or
held here, if and only if its sequence number is at most its spool's mark.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from attrs import frozen


@frozen
class HeldMessage:
    """
    A spooled message that was acknowledged and could not be filed for some
    of its recipients.

    @ivar envelope: the envelope (JSON) naming only those recipients.
    @ivar reason: the reply each of them got from filing.
    """

    spool_id: str
    seq: int
    queue_id: str
    received: float
    envelope: str
    message: bytes
    reason: str
    held_at: float


def filed(txn: Any, spool_id: str) -> int:
    """
    The sequence number of the last message filed from the spool
    C{spool_id} (0 when none was).
    """
    return int(txn.fetchvalue("SELECT filed FROM delivery_spool WHERE spool_id = ?", (spool_id,), default=0))


def set_filed(txn: Any, spool_id: str, seq: int) -> None:
    """
    Record, in the filing transaction, that the spool C{spool_id} was filed
    up to C{seq}.
    """
    txn.execute(
        "INSERT INTO delivery_spool (spool_id, filed) VALUES (?, ?)"
        " ON CONFLICT (spool_id) DO UPDATE SET filed = excluded.filed",
        (spool_id, seq),
    )


def hold(txn: Any, held: HeldMessage) -> None:
    """
    Keep C{held} for the operator (in the filing transaction).
    """
    txn.execute(
        "INSERT INTO delivery_held (spool_id, seq, queue_id, received, envelope, message, reason, held_at)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        (held.spool_id, held.seq, held.queue_id, held.received, held.envelope, held.message, held.reason,
         held.held_at),
    )


def held_messages(txn: Any) -> list[HeldMessage]:
    """
    Every held message, oldest first.
    """
    rows = txn.fetchall(
        "SELECT spool_id, seq, queue_id, received, envelope, message, reason, held_at FROM delivery_held"
        " ORDER BY held_at, spool_id, seq"
    )
    return [
        HeldMessage(spool_id, int(seq), queue_id, float(received), envelope, bytes(message), reason, float(held_at))
        for spool_id, seq, queue_id, received, envelope, message, reason, held_at in rows
    ]


def drop_held(txn: Any, queue_ids: Sequence[str]) -> list[str]:
    """
    Delete the held messages with these queue ids; the ones that were held.
    """
    dropped = []
    for queue_id in queue_ids:
        txn.execute("DELETE FROM delivery_held WHERE queue_id = ?", (queue_id,))
        if txn.rowcount:
            dropped.append(queue_id)
    return dropped
