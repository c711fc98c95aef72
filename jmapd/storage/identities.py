# -*- test-case-name: tests.mail.test_identity -*-
"""
Identities in the database.

Every address of an account (its own addresses and aliases, in
C{account_addresses}) has a default Identity, which the user cannot
delete (mayDelete false).  Addresses change outside JMAP (C{jmapd-admin}
adds and removes aliases), so L{sync_identities} brings the Identities in
line with the addresses, in the transaction that changes them: when an
account is created and when an alias is added or removed
(L{jmapd.ingest.recipients}).  An Identity whose address the account no
longer has, default or not, goes with the address.  Identity/get and
/changes then only read.  L{sync_all} brings in line data written before
jmapd did this (the server runs it once when it starts).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import orjson
from attrs import frozen

from jmapd.storage import accounts, changelog
from jmapd.storage.changelog import CREATED, DESTROYED, UPDATED
from jmapd.storage.ids import new_id
from jmapd.storage.sql import chunks, marks

IDENTITY = "Identity"


@frozen
class Identity:
    id: str
    name: str
    email: str
    reply_to: list[dict[str, Any]] | None
    bcc: list[dict[str, Any]] | None
    text_signature: str
    html_signature: str
    is_default: bool


_COLUMNS = "id, name, email, reply_to, bcc, text_signature, html_signature, is_default"

#: The Identity/set properties and their columns.
_FIELDS = {
    "name": "name",
    "email": "email",
    "replyTo": "reply_to",
    "bcc": "bcc",
    "textSignature": "text_signature",
    "htmlSignature": "html_signature",
}
_JSON_FIELDS = frozenset({"replyTo", "bcc"})


def _identity(row: Sequence[Any]) -> Identity:
    return Identity(
        id=row[0],
        name=row[1],
        email=row[2],
        reply_to=None if row[3] is None else orjson.loads(row[3]),
        bcc=None if row[4] is None else orjson.loads(row[4]),
        text_signature=row[5],
        html_signature=row[6],
        is_default=bool(row[7]),
    )


def _column_value(name: str, value: Any) -> Any:
    if name in _JSON_FIELDS:
        return None if value is None else orjson.dumps(value).decode("utf-8")
    return value


def account_addresses(txn: Any, account_id: str) -> list[str]:
    """
    The account's addresses (lower case), its own first, then aliases.
    """
    rows = txn.fetchall(
        "SELECT address FROM account_addresses WHERE account_id = ? ORDER BY is_alias, position, address",
        (account_id,),
    )
    return [row[0] for row in rows]


def get_identities(txn: Any, account_id: str, ids: Sequence[str] | None) -> list[Identity]:
    if ids is None:
        rows = txn.fetchall(f"SELECT {_COLUMNS} FROM identities WHERE account_id = ? ORDER BY id", (account_id,))
        return [_identity(row) for row in rows]
    found: list[Identity] = []
    for chunk in chunks(ids):
        rows = txn.fetchall(
            f"SELECT {_COLUMNS} FROM identities WHERE account_id = ? AND id IN ({marks(len(chunk))})",
            (account_id, *chunk),
        )
        found.extend(_identity(row) for row in rows)
    return found


def count_identities(txn: Any, account_id: str) -> int:
    return int(txn.fetchvalue("SELECT count(*) FROM identities WHERE account_id = ?", (account_id,), 0))


def add_identity(txn: Any, account_id: str, values: dict[str, Any], is_default: bool = False) -> str:
    """
    Create an Identity from Identity properties (name, email, replyTo,
    bcc, textSignature, htmlSignature; missing ones get their defaults).
    """
    identity_id = new_id("i")
    txn.execute(
        "INSERT INTO identities (account_id, id, name, email, reply_to, bcc, text_signature, html_signature,"
        " is_default) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            account_id,
            identity_id,
            values.get("name") or "",
            values["email"],
            _column_value("replyTo", values.get("replyTo")),
            _column_value("bcc", values.get("bcc")),
            values.get("textSignature") or "",
            values.get("htmlSignature") or "",
            int(is_default),
        ),
    )
    changelog.record_change(txn, account_id, IDENTITY, identity_id, CREATED)
    return identity_id


def update_identity(txn: Any, account_id: str, identity_id: str, values: dict[str, Any]) -> None:
    """
    Change some properties (not C{email}, which is immutable).
    """
    names = [name for name in values if name in _FIELDS and name != "email"]
    if not names:
        return
    txn.execute(
        f"UPDATE identities SET {', '.join(f'{_FIELDS[n]} = ?' for n in names)} WHERE account_id = ? AND id = ?",
        (*(_column_value(n, values[n]) for n in names), account_id, identity_id),
    )
    changelog.record_change(txn, account_id, IDENTITY, identity_id, UPDATED)


def destroy_identity(txn: Any, account_id: str, identity_id: str) -> bool:
    txn.execute("DELETE FROM identities WHERE account_id = ? AND id = ?", (account_id, identity_id))
    if txn.rowcount == 0:
        return False
    changelog.record_change(txn, account_id, IDENTITY, identity_id, DESTROYED)
    return True


def needs_sync(txn: Any, account_id: str) -> bool:
    """
    Whether the Identities differ from the addresses: an address without a
    default Identity, or an Identity for an address the account lost.
    """
    missing = txn.fetchvalue(
        "SELECT count(*) FROM account_addresses a WHERE a.account_id = ? AND NOT EXISTS"
        " (SELECT 1 FROM identities i WHERE i.account_id = a.account_id AND lower(i.email) = a.address"
        " AND i.is_default = 1)",
        (account_id,),
        0,
    )
    if missing:
        return True
    orphans = txn.fetchvalue(
        "SELECT count(*) FROM identities i WHERE i.account_id = ? AND NOT EXISTS"
        " (SELECT 1 FROM account_addresses a WHERE a.account_id = i.account_id AND a.address = lower(i.email))",
        (account_id,),
        0,
    )
    return bool(orphans)


def sync_identities(txn: Any, account_id: str) -> bool:
    """
    Give every address of the account its default Identity and remove the
    Identities of addresses it no longer has.

    @return: whether anything changed.
    """
    if not needs_sync(txn, account_id):
        return False
    addresses = account_addresses(txn, account_id)
    owned = set(addresses)
    identities = get_identities(txn, account_id, None)
    for identity in identities:
        if identity.email.lower() not in owned:
            destroy_identity(txn, account_id, identity.id)
    defaults = {i.email.lower() for i in identities if i.is_default and i.email.lower() in owned}
    for address in addresses:
        if address not in defaults:
            add_identity(txn, account_id, {"email": address}, is_default=True)
    return True


def sync_all(txn: Any) -> int:
    """
    L{sync_identities} for every account whose Identities differ from its
    addresses; return how many did.
    """
    rows = txn.fetchall(
        "SELECT DISTINCT a.account_id FROM account_addresses a WHERE NOT EXISTS"
        " (SELECT 1 FROM identities i WHERE i.account_id = a.account_id AND lower(i.email) = a.address"
        " AND i.is_default = 1)"
        " UNION SELECT DISTINCT i.account_id FROM identities i WHERE NOT EXISTS"
        " (SELECT 1 FROM account_addresses a WHERE a.account_id = i.account_id AND a.address = lower(i.email))"
    )
    accounts_changed = sorted(row[0] for row in rows)
    for account_id in accounts_changed:
        sync_identities(txn, account_id)
    return len(accounts_changed)


def _account_created(txn: Any, account_id: str) -> None:
    sync_identities(txn, account_id)


accounts.account_created_hooks.append(_account_created)
