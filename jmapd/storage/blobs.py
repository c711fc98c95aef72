# -*- test-case-name: tests.blobs.test_expiry -*-
"""
Which account may read which blob, and which uploads may be dropped.

The bytes live in a blob store; this table is the access list: an account
sees a blob only through its own row.  An upload's row expires after
C{blob-temp-ttl} unless something (an Email, a copy) made it permanent.
"""

from __future__ import annotations

from typing import Any

from attrs import frozen


@frozen
class BlobRecord:
    account_id: str
    blob_id: str
    size: int
    type: str
    expires_at: float | None


def add_blob(
    txn: Any, account_id: str, blob_id: str, size: int, type: str, now: float, expires_at: float | None
) -> BlobRecord:
    """
    Give C{account_id} access to C{blob_id}.  An existing row keeps the
    longer lifetime: a permanent row stays permanent, an upload of the same
    bytes again extends the expiry.
    """
    # Two uploads of the same bytes at once must not both insert the row.
    txn.lock_account(account_id)
    # Ordered against the deletion of the bytes of an unreferenced blob
    # (expire_blobs): once this returns, the bytes are deleted only if this
    # transaction rolls back; the caller checks they are still there.
    txn.engine.lock_blob(txn, blob_id)
    # One statement: a new row (every delivery), or a longer lifetime for
    # an existing one.  No row back: the existing row lives longer.
    rows = txn.fetchall(
        "INSERT INTO blobs (account_id, blob_id, size, type, created_at, expires_at) VALUES (?, ?, ?, ?, ?, ?)"
        " ON CONFLICT (account_id, blob_id) DO UPDATE SET expires_at = excluded.expires_at, type = excluded.type"
        " WHERE blobs.expires_at IS NOT NULL"
        " AND (excluded.expires_at IS NULL OR excluded.expires_at > blobs.expires_at)"
        " RETURNING expires_at",
        (account_id, blob_id, size, type, now, expires_at),
    )
    if not rows:
        # The existing row lives longer: report what is stored.
        expires_at = txn.fetchvalue(
            "SELECT expires_at FROM blobs WHERE account_id = ? AND blob_id = ?", (account_id, blob_id)
        )
    return BlobRecord(account_id, blob_id, size, type, expires_at)


def get_blob(txn: Any, account_id: str, blob_id: str) -> BlobRecord | None:
    row = txn.fetchone(
        "SELECT size, type, expires_at FROM blobs WHERE account_id = ? AND blob_id = ?", (account_id, blob_id)
    )
    if row is None:
        return None
    return BlobRecord(account_id, blob_id, int(row[0]), row[1], row[2])


def keep_blob(txn: Any, account_id: str, blob_id: str) -> None:
    """
    Make the account's access to the blob permanent (it is referenced).
    """
    txn.execute(
        "UPDATE blobs SET expires_at = NULL WHERE account_id = ? AND blob_id = ?", (account_id, blob_id)
    )


def grant_blob(txn: Any, account_id: str, blob_id: str, principal_id: str) -> None:
    """
    Let C{principal_id}, who put C{blob_id} into C{account_id} (not their
    own), read it there for as long as the account's row exists.
    """
    txn.execute(
        "INSERT INTO blob_access (account_id, blob_id, principal_id) VALUES (?, ?, ?) "
        + txn.engine.upsert_ignore(),
        (account_id, blob_id, principal_id),
    )


def granted(txn: Any, account_id: str, blob_id: str, principal_id: str) -> bool:
    """
    Whether C{principal_id} put C{blob_id} into C{account_id} themselves.
    """
    return (
        txn.fetchone(
            "SELECT 1 FROM blob_access WHERE account_id = ? AND blob_id = ? AND principal_id = ?",
            (account_id, blob_id, principal_id),
        )
        is not None
    )


def expire_blobs(txn: Any, now: float) -> list[str]:
    """
    Drop every expired upload row; return the blob ids no row refers to any
    more, whose bytes the caller deletes in this transaction (holding each
    blob's lock, so that an L{add_blob} of the same bytes in another
    transaction either comes first and keeps them, or comes after and
    finds them gone).
    """
    expired = [
        row[0]
        for row in txn.fetchall(
            "SELECT DISTINCT blob_id FROM blobs WHERE expires_at IS NOT NULL AND expires_at <= ?"
            " ORDER BY blob_id",
            (now,),
        )
    ]
    if not expired:
        return []
    # Their blob_access rows go with them (ON DELETE CASCADE).
    txn.execute("DELETE FROM blobs WHERE expires_at IS NOT NULL AND expires_at <= ?", (now,))
    orphans = []
    for blob_id in expired:
        # Wait for a transaction that is making the blob referenced again
        # (add_blob) and see its row; one that comes later waits for this
        # transaction and then finds the bytes gone (see add_blob).
        txn.engine.lock_blob(txn, blob_id)
        if txn.fetchone("SELECT 1 FROM blobs WHERE blob_id = ?", (blob_id,)) is None:
            orphans.append(blob_id)
    return orphans
