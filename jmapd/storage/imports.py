# -*- test-case-name: tests.test_importexport -*-
"""
Which messages C{jmapd-admin import} has brought into an account, by the
hash of their content, so that running an import again adds nothing twice.
"""

from __future__ import annotations

from typing import Any


def find_imported(txn: Any, account_id: str, content_hash: str) -> str | None:
    """
    The id of the Email an earlier import made of this content, or
    C{None} when it was never imported (the Email may have been destroyed
    since: the id is still returned, so that the import does not bring
    back what the user deleted).
    """
    value = txn.fetchvalue(
        "SELECT email_id FROM imported_messages WHERE account_id = ? AND content_hash = ?",
        (account_id, content_hash),
    )
    return None if value is None else str(value)


def record_imported(txn: Any, account_id: str, content_hash: str, email_id: str) -> None:
    txn.execute(
        "INSERT INTO imported_messages (account_id, content_hash, email_id) VALUES (?, ?, ?)",
        (account_id, content_hash, email_id),
    )
