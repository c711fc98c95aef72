# -*- test-case-name: tests.ingest.test_spool -*-
"""
How far each node's delivery spool has been filed (L{jmapd.ingest.spool}).

The mark is written by the transaction that files the messages, so that it
is committed together with them: a message is in the mailboxes if and only
if its sequence number is at most its spool's mark, or it is held.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import orjson

from jmapd.ingest.spool import Hold


def filed(txn: Any, spool_id: str) -> tuple[int, list[Hold]]:
    """
    The sequence number of the last message filed from the spool
    C{spool_id} (0 when none was), and the copies the filing could not
    file that the spool may not have held yet.
    """
    row = txn.fetchone("SELECT filed, holds FROM delivery_spool WHERE node = ?", (spool_id,))
    if row is None:
        return 0, []
    holds = [Hold(seq, envelope.encode("utf-8"), reason) for seq, envelope, reason in orjson.loads(row[1])]
    return int(row[0]), holds


def set_filed(txn: Any, spool_id: str, seq: int, holds: Sequence[Hold] = ()) -> None:
    """
    Record, in the filing transaction, that the spool C{spool_id} was filed
    up to C{seq}, and C{holds}: the copies up to C{seq} that were not filed
    and whose hold the spool has not confirmed (so that a crash before it
    does cannot delete them with the filed records).
    """
    text = orjson.dumps([[held.seq, held.envelope.decode("utf-8"), held.reason] for held in holds]).decode("ascii")
    txn.execute(
        "INSERT INTO delivery_spool (node, filed, holds) VALUES (?, ?, ?)"
        " ON CONFLICT (node) DO UPDATE SET filed = excluded.filed, holds = excluded.holds",
        (spool_id, seq, text),
    )
