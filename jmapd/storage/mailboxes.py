# -*- test-case-name: tests.storage.test_mailboxes -*-
"""
Mailboxes: the rows, their counts, and the changelog entries every change
of them writes.

Every function takes a transaction first and runs inside it.  The rules of
RFC 8621 (unique sibling names and roles, no cycles, rights) are checked by
L{jmapd.mail.mailbox}; this module stores what it is given.

Importing this module registers L{create_default_mailboxes} as an account
creation hook, so every account made afterwards starts with the usual
Mailboxes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

from attrs import frozen
from twisted.logger import Logger

from jmapd.storage import accounts, changelog
from jmapd.storage import principals as _principals  # noqa: F401  (registers its account hook)
from jmapd.storage.ids import new_id
from jmapd.storage.sql import chunks, marks

log = Logger()

#: The type name of Mailbox changes in the changelog (and its state).
TYPE_NAME = "Mailbox"

#: Default Mailboxes of a new account: (name, role, sortOrder).
DEFAULT_MAILBOXES = (
    ("Inbox", "inbox", 10),
    ("Drafts", "drafts", 20),
    ("Sent", "sent", 30),
    ("Archive", "archive", 40),
    ("Junk", "junk", 50),
    ("Trash", "trash", 60),
)

#: Called before a Mailbox row is deleted, in the same transaction, as
#: C{hook(txn, account_id, mailbox_id, remove_emails)}: the Email storage
#: removes the Emails from the Mailbox there (destroying those in no other
#: Mailbox) when C{remove_emails} is true.  Mailbox/set only destroys a
#: Mailbox with Emails when the client asked for that.
mailbox_destroy_hooks: list[Callable[[Any, str, str, bool], None]] = []

_COLUMNS = (
    "id, name, parent_id, role, sort_order, is_subscribed,"
    " total_emails, unread_emails, total_threads, unread_threads"
)

# SQLite builds before 3.32 allow 999 parameters per statement.

@frozen
class Mailbox:
    """
    One stored Mailbox, in storage terms (JMAP names are mapped by
    L{jmapd.mail.mailbox}).
    """

    id: str
    name: str
    parent_id: str | None
    role: str | None
    sort_order: int
    is_subscribed: bool
    total_emails: int = 0
    unread_emails: int = 0
    total_threads: int = 0
    unread_threads: int = 0


def _row_to_mailbox(row: Any) -> Mailbox:
    return Mailbox(
        id=row[0],
        name=row[1],
        parent_id=row[2],
        role=row[3],
        sort_order=int(row[4]),
        is_subscribed=bool(row[5]),
        total_emails=int(row[6]),
        unread_emails=int(row[7]),
        total_threads=int(row[8]),
        unread_threads=int(row[9]),
    )


def get_mailboxes(txn: Any, account_id: str, ids: Iterable[str] | None = None) -> list[Mailbox]:
    """
    The account's Mailboxes with these ids that exist (every one for
    C{ids=None}), in no particular order.
    """
    if ids is None:
        rows = txn.fetchall(f"SELECT {_COLUMNS} FROM mailboxes WHERE account_id = ?", (account_id,))
        return [_row_to_mailbox(row) for row in rows]
    wanted = list(dict.fromkeys(ids))
    found: list[Mailbox] = []
    for chunk in chunks(wanted):
        rows = txn.fetchall(
            f"SELECT {_COLUMNS} FROM mailboxes WHERE account_id = ? AND id IN ({marks(len(chunk))})",
            (account_id, *chunk),
        )
        found.extend(_row_to_mailbox(row) for row in rows)
    return found


def get_mailbox(txn: Any, account_id: str, mailbox_id: str) -> Mailbox | None:
    row = txn.fetchone(
        f"SELECT {_COLUMNS} FROM mailboxes WHERE account_id = ? AND id = ?", (account_id, mailbox_id)
    )
    return None if row is None else _row_to_mailbox(row)


def count_mailboxes(txn: Any, account_id: str) -> int:
    return int(txn.fetchvalue("SELECT count(*) FROM mailboxes WHERE account_id = ?", (account_id,), 0))


def mailbox_exists(txn: Any, account_id: str, mailbox_id: str) -> bool:
    return (
        txn.fetchone("SELECT 1 FROM mailboxes WHERE account_id = ? AND id = ?", (account_id, mailbox_id))
        is not None
    )


def mailbox_ids(txn: Any, account_id: str) -> set[str]:
    return {row[0] for row in txn.fetchall("SELECT id FROM mailboxes WHERE account_id = ?", (account_id,))}


def find_by_role(txn: Any, account_id: str, role: str) -> str | None:
    """
    The id of the account's Mailbox with this role (roles are unique per
    account), or C{None}.
    """
    value = txn.fetchvalue(
        "SELECT id FROM mailboxes WHERE account_id = ? AND role = ? ORDER BY id LIMIT 1", (account_id, role)
    )
    return None if value is None else str(value)


def has_children(txn: Any, account_id: str, mailbox_id: str) -> bool:
    return (
        txn.fetchone(
            "SELECT 1 FROM mailboxes WHERE account_id = ? AND parent_id = ? LIMIT 1", (account_id, mailbox_id)
        )
        is not None
    )


def add_mailbox(
    txn: Any,
    account_id: str,
    name: str,
    parent_id: str | None = None,
    role: str | None = None,
    sort_order: int = 0,
    is_subscribed: bool = True,
) -> Mailbox:
    """
    Store a new, empty Mailbox under a fresh id and record its creation.
    """
    txn.lock_account(account_id)
    mailbox = Mailbox(
        id=new_id("m"),
        name=name,
        parent_id=parent_id,
        role=role,
        sort_order=sort_order,
        is_subscribed=is_subscribed,
    )
    txn.execute(
        "INSERT INTO mailboxes (account_id, id, name, parent_id, role, sort_order, is_subscribed)"
        " VALUES (?, ?, ?, ?, ?, ?, ?)",
        (account_id, mailbox.id, name, parent_id, role, sort_order, int(is_subscribed)),
    )
    changelog.record_change(txn, account_id, TYPE_NAME, mailbox.id, changelog.CREATED)
    return mailbox


def update_mailbox(txn: Any, account_id: str, mailbox: Mailbox) -> None:
    """
    Store the client-settable properties of C{mailbox} (not its counts)
    and record an update of its properties.
    """
    txn.lock_account(account_id)
    txn.execute(
        "UPDATE mailboxes SET name = ?, parent_id = ?, role = ?, sort_order = ?, is_subscribed = ?"
        " WHERE account_id = ? AND id = ?",
        (
            mailbox.name,
            mailbox.parent_id,
            mailbox.role,
            mailbox.sort_order,
            int(mailbox.is_subscribed),
            account_id,
            mailbox.id,
        ),
    )
    changelog.record_change(txn, account_id, TYPE_NAME, mailbox.id, changelog.UPDATED)


def destroy_mailbox(txn: Any, account_id: str, mailbox_id: str, remove_emails: bool) -> None:
    """
    Run L{mailbox_destroy_hooks}, then delete the Mailbox and record its
    destruction.
    """
    txn.lock_account(account_id)
    for hook in mailbox_destroy_hooks:
        hook(txn, account_id, mailbox_id, remove_emails)
    # Whoever it was shared with or who subscribed to it may see fewer
    # accounts now.
    concerned = [
        row[0]
        for row in txn.fetchall(
            "SELECT principal_id FROM mailbox_acl WHERE account_id = ? AND mailbox_id = ?"
            " UNION SELECT principal_id FROM mailbox_subscriptions WHERE account_id = ? AND mailbox_id = ?",
            (account_id, mailbox_id, account_id, mailbox_id),
        )
    ]
    if concerned:
        txn.execute("DELETE FROM mailbox_acl WHERE account_id = ? AND mailbox_id = ?", (account_id, mailbox_id))
        _principals.bump(txn, "acl")
        _principals.touch_shared_accounts(txn, concerned)
    txn.execute("DELETE FROM mailbox_subscriptions WHERE account_id = ? AND mailbox_id = ?", (account_id, mailbox_id))
    txn.execute("DELETE FROM mailboxes WHERE account_id = ? AND id = ?", (account_id, mailbox_id))
    changelog.record_change(txn, account_id, TYPE_NAME, mailbox_id, changelog.DESTROYED)


def create_default_mailboxes(txn: Any, account_id: str) -> None:
    """
    Give a new account Inbox, Drafts, Sent, Archive, Junk and Trash with
    their roles, all subscribed (an account creation hook).
    """
    for name, role, sort_order in DEFAULT_MAILBOXES:
        add_mailbox(txn, account_id, name, role=role, sort_order=sort_order)


def adjust_counts(txn: Any, account_id: str, deltas: Mapping[str, tuple[int, int, int, int]]) -> None:
    """
    Add C{(totalEmails, unreadEmails, totalThreads, unreadThreads)} deltas
    to Mailboxes and record a counts-only update of each changed one (so
    Mailbox/changes can say only the counts changed).  All-zero deltas are
    skipped; a Mailbox that does not exist is logged and skipped.
    """
    txn.lock_account(account_id)
    for mailbox_id in sorted(deltas):
        total_emails, unread_emails, total_threads, unread_threads = deltas[mailbox_id]
        if not (total_emails or unread_emails or total_threads or unread_threads):
            continue
        txn.execute(
            "UPDATE mailboxes SET total_emails = total_emails + ?, unread_emails = unread_emails + ?,"
            " total_threads = total_threads + ?, unread_threads = unread_threads + ?"
            " WHERE account_id = ? AND id = ?",
            (total_emails, unread_emails, total_threads, unread_threads, account_id, mailbox_id),
        )
        if txn.rowcount == 0:
            log.warn(
                "count change for unknown Mailbox {mailbox} in {account} ignored",
                mailbox=mailbox_id,
                account=account_id,
            )
            continue
        changelog.record_change(txn, account_id, TYPE_NAME, mailbox_id, changelog.UPDATED, props=False)


def get_counts(txn: Any, account_id: str, mailbox_id: str) -> tuple[int, int, int, int]:
    """
    C{(totalEmails, unreadEmails, totalThreads, unreadThreads)} of a
    Mailbox.

    @raise KeyError: no such Mailbox.
    """
    row = txn.fetchone(
        "SELECT total_emails, unread_emails, total_threads, unread_threads FROM mailboxes"
        " WHERE account_id = ? AND id = ?",
        (account_id, mailbox_id),
    )
    if row is None:
        raise KeyError(mailbox_id)
    return int(row[0]), int(row[1]), int(row[2]), int(row[3])


def query_state(txn: Any, account_id: str) -> int:
    """
    The queryState of every Mailbox query: the modseq of the last change
    of a property a query can look at (name, parentId, role, sortOrder,
    isSubscribed; a creation or destruction), so the count changes every
    delivery makes leave it alone.  Never below the compaction floor, so
    a state cannot go back to one that was given out before.
    """
    txn.flush()
    row = txn.fetchone(
        "SELECT max(props_modseq) FROM changelog WHERE account_id = ? AND type = ?", (account_id, TYPE_NAME)
    )
    floor = txn.fetchvalue(
        "SELECT min_modseq FROM states WHERE account_id = ? AND type = ?", (account_id, TYPE_NAME), 0
    )
    return max(int(row[0] or 0) if row else 0, int(floor or 0))


def query_changes_since(txn: Any, account_id: str, since: int) -> tuple[set[str], set[str]]:
    """
    The Mailboxes whose query-relevant properties changed (or that were
    created or destroyed) after query state C{since}, and which of them
    were created after it.

    @raise changelog.CannotCalculateChanges: C{since} is before the
        compacted part of the changelog or not a state of this account.
    """
    txn.flush()
    floor = int(
        txn.fetchvalue("SELECT min_modseq FROM states WHERE account_id = ? AND type = ?", (account_id, TYPE_NAME), 0)
        or 0
    )
    if since < floor or since > query_state(txn, account_id):
        raise changelog.CannotCalculateChanges(f"state {since} is not known for Mailbox queries")
    touched: set[str] = set()
    created: set[str] = set()
    for object_id, created_modseq in txn.fetchall(
        "SELECT object_id, created_modseq FROM changelog WHERE account_id = ? AND type = ? AND props_modseq > ?",
        (account_id, TYPE_NAME, since),
    ):
        touched.add(object_id)
        if int(created_modseq) > since:
            created.add(object_id)
    return touched, created


# -- sharing: grants (shareWith) and per-user subscriptions ------------------------


def _rights_text(rights: Iterable[str]) -> str:
    return ",".join(sorted(rights))


def _rights_set(text: str) -> frozenset[str]:
    return frozenset(r for r in text.split(",") if r)


def get_share_with(txn: Any, account_id: str, mailbox_ids: Iterable[str]) -> dict[str, dict[str, frozenset[str]]]:
    """
    The grants on each of these Mailboxes: C{{mailbox_id: {principal_id:
    rights}}} (a Mailbox shared with no one is absent).
    """
    found: dict[str, dict[str, frozenset[str]]] = {}
    wanted = list(dict.fromkeys(mailbox_ids))
    for chunk in chunks(wanted):
        for mailbox_id, principal_id, rights in txn.fetchall(
            "SELECT mailbox_id, principal_id, rights FROM mailbox_acl"
            f" WHERE account_id = ? AND mailbox_id IN ({marks(len(chunk))})",
            (account_id, *chunk),
        ):
            found.setdefault(mailbox_id, {})[principal_id] = _rights_set(rights)
    return found


def set_share_with(txn: Any, account_id: str, mailbox_id: str, grants: Mapping[str, Iterable[str]]) -> None:
    """
    Replace the grants on a Mailbox (principals with no right are dropped)
    and raise the C{acl} counter.
    """
    txn.lock_account(account_id)
    txn.execute("DELETE FROM mailbox_acl WHERE account_id = ? AND mailbox_id = ?", (account_id, mailbox_id))
    for principal_id, rights in sorted(grants.items()):
        text = _rights_text(rights)
        if text:
            txn.execute(
                "INSERT INTO mailbox_acl (account_id, mailbox_id, principal_id, rights) VALUES (?, ?, ?, ?)",
                (account_id, mailbox_id, principal_id, text),
            )
    _principals.bump(txn, "acl")


def grants_for(txn: Any, principal_ids: Iterable[str], account_id: str | None = None) -> dict[str, dict[str, frozenset[str]]]:
    """
    What these principals (a user and their groups) were given, together:
    C{{account_id: {mailbox_id: rights}}}, for one account or all.
    """
    ids = list(principal_ids)
    marks = ", ".join("?" * len(ids))
    sql = f"SELECT account_id, mailbox_id, rights FROM mailbox_acl WHERE principal_id IN ({marks})"
    params: tuple[Any, ...] = tuple(ids)
    if account_id is not None:
        sql += " AND account_id = ?"
        params += (account_id,)
    found: dict[str, dict[str, frozenset[str]]] = {}
    for account, mailbox_id, rights in txn.fetchall(sql, params):
        mailboxes = found.setdefault(account, {})
        mailboxes[mailbox_id] = mailboxes.get(mailbox_id, frozenset()) | _rights_set(rights)
    return found


def subscriptions(txn: Any, principal_id: str, account_id: str | None = None) -> dict[str, set[str]]:
    """
    The shared Mailboxes C{principal_id} is subscribed to, by account.
    """
    sql = "SELECT account_id, mailbox_id FROM mailbox_subscriptions WHERE principal_id = ?"
    params: tuple[Any, ...] = (principal_id,)
    if account_id is not None:
        sql += " AND account_id = ?"
        params += (account_id,)
    found: dict[str, set[str]] = {}
    for account, mailbox_id in txn.fetchall(sql, params):
        found.setdefault(account, set()).add(mailbox_id)
    return found


def subscribers(txn: Any, account_id: str, mailbox_id: str) -> list[str]:
    """
    The users other than the owner subscribed to a Mailbox.
    """
    rows = txn.fetchall(
        "SELECT principal_id FROM mailbox_subscriptions WHERE account_id = ? AND mailbox_id = ? ORDER BY principal_id",
        (account_id, mailbox_id),
    )
    return [str(row[0]) for row in rows]


def set_subscribed(txn: Any, account_id: str, mailbox_id: str, principal_id: str, subscribed: bool) -> None:
    """
    Subscribe a user other than the owner to a Mailbox, or not; raises the
    C{acl} counter (the Session lists shared accounts by subscription).
    """
    txn.execute(
        "DELETE FROM mailbox_subscriptions WHERE account_id = ? AND mailbox_id = ? AND principal_id = ?",
        (account_id, mailbox_id, principal_id),
    )
    if subscribed:
        txn.execute(
            "INSERT INTO mailbox_subscriptions (account_id, mailbox_id, principal_id) VALUES (?, ?, ?)",
            (account_id, mailbox_id, principal_id),
        )
    _principals.bump(txn, "acl")
    _principals.touch_shared_accounts(txn, [principal_id])


def record_update(txn: Any, account_id: str, mailbox_id: str) -> None:
    """
    Record a change of a Mailbox's properties that is not a column of its
    row (shareWith).
    """
    txn.lock_account(account_id)
    changelog.record_change(txn, account_id, TYPE_NAME, mailbox_id, changelog.UPDATED)


accounts.account_created_hooks.append(create_default_mailboxes)
