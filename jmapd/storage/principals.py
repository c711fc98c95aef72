# -*- test-case-name: tests.mail.test_sharing -*-
"""
Principals (RFC 9670 section 2): one individual Principal per account, with
the account's id, and groups with members; and the counters that say when
any of sharing changed.

Principals form one directory for the whole server.  Their state is the
C{principal} counter of C{sharing_counters}, which every change of a
Principal raises; each row keeps the value at its creation and last change,
so Principal/changes reads them like an account's changelog.

The C{acl} counter goes up with every change of who may see what: a grant
(Mailbox shareWith), a group's members, a subscription to a shared Mailbox.
The sharings and acl caches put it in their keys, so a change made by any
process is seen on the next request, and nothing needs invalidating.

Importing this module registers L{create_principal} as an account creation
hook.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from attrs import frozen
from twisted.logger import Logger

from jmapd.storage import accounts, changelog
from jmapd.storage.ids import new_id
from jmapd.storage.sql import chunks, marks

log = Logger()

INDIVIDUAL = "individual"
GROUP = "group"
TYPES = (INDIVIDUAL, GROUP, "resource", "location", "other")

_COLUMNS = "p.id, p.type, p.name, p.description, p.time_zone, p.account_id"


class NoSuchPrincipal(Exception):
    """
    A name or id that is no Principal (of the expected type).
    """


@frozen
class PrincipalRecord:
    id: str
    type: str
    name: str
    description: str | None
    time_zone: str | None
    account_id: str | None
    email: str | None


def counter(txn: Any, name: str) -> int:
    return int(txn.fetchvalue("SELECT value FROM sharing_counters WHERE name = ?", (name,), 0) or 0)


def bump(txn: Any, name: str) -> int:
    """
    Raise a counter (C{principal} or C{acl}) and return its new value.
    """
    txn.execute("UPDATE sharing_counters SET value = value + 1 WHERE name = ?", (name,))
    if name == "acl":
        # What this transaction computes about sharing from now on is not
        # committed yet: jmapd.sharing keeps it out of its caches.
        txn.__dict__["sharing_dirty"] = True
        txn.__dict__.pop("acl_version", None)
    return counter(txn, name)


def acl_version(txn: Any) -> int:
    return counter(txn, "acl")


#: The pseudo-type whose state moves in a user's own account when the
#: shared accounts they may see or are subscribed to may have changed
#: otherwise than by a ShareNotification (their isSubscribed, a group's
#: members): an open push channel of theirs then reads its account list
#: again (L{jmapd.push.follow}).
SHARED_ACCOUNTS = "SharedAccounts"


def touch_shared_accounts(txn: Any, principal_ids: Iterable[str]) -> None:
    """
    Move the L{SHARED_ACCOUNTS} state of each individual among
    C{principal_ids} and of every member, however indirect, of each group
    among them.
    """
    individuals: set[str] = set()
    frontier = set(principal_ids)
    seen: set[str] = set()
    while frontier:
        seen |= frontier
        marks = ", ".join("?" * len(frontier))
        rows = txn.fetchall(f"SELECT id, account_id FROM principals WHERE id IN ({marks})", tuple(sorted(frontier)))
        individuals |= {str(row[1]) for row in rows if row[1] is not None}
        members = txn.fetchall(
            f"SELECT member_id FROM principal_members WHERE group_id IN ({marks})", tuple(sorted(frontier))
        )
        frontier = {str(row[0]) for row in members} - seen
    for account_id in sorted(individuals):
        txn.lock_account(account_id)
        changelog.touch_state(txn, account_id, SHARED_ACCOUNTS)


def drop_lost_subscriptions(txn: Any, user_ids: Iterable[str]) -> list[str]:
    """
    Unsubscribe each of these users from the shared Mailboxes they have no
    right on any more, directly or through a group; returns those who lost
    a subscription.

    isSubscribed is the user's own and SHOULD default to false in a shared
    account (RFC 8621 section 2).  A subscription kept past a revocation
    would come back with the next grant, and with it the account in their
    Session, which lists a shared account only while they subscribe to
    some of it (RFC 9670 section 1.4): as if they had subscribed again.
    So it goes in the transaction that takes their last right.  Any right
    keeps it, since any right makes the Mailbox visible to them
    (L{jmapd.sharing}).  Like their own unsubscribing, this raises the
    C{acl} counter and moves their L{SHARED_ACCOUNTS} state.

    @param user_ids: Principal ids; groups among them have no
        subscriptions and are skipped.
    """
    dropped: list[str] = []
    for user_id in sorted(set(user_ids)):
        subscribed = {
            (str(row[0]), str(row[1]))
            for row in txn.fetchall(
                "SELECT account_id, mailbox_id FROM mailbox_subscriptions WHERE principal_id = ?", (user_id,)
            )
        }
        if not subscribed:
            continue
        ids = (user_id, *groups_of(txn, user_id))
        granted = {
            (str(row[0]), str(row[1]))
            for row in txn.fetchall(
                f"SELECT account_id, mailbox_id FROM mailbox_acl WHERE principal_id IN ({marks(len(ids))})", ids
            )
        }
        lost = sorted(subscribed - granted)
        if not lost:
            continue
        for account_id, mailbox_id in lost:
            txn.execute(
                "DELETE FROM mailbox_subscriptions WHERE account_id = ? AND mailbox_id = ? AND principal_id = ?",
                (account_id, mailbox_id, user_id),
            )
        log.debug(
            "{user} has no right left on {mailboxes}: no longer subscribed to them",
            user=user_id,
            mailboxes=[f"{account_id}/{mailbox_id}" for account_id, mailbox_id in lost],
        )
        dropped.append(user_id)
    if dropped:
        bump(txn, "acl")
        touch_shared_accounts(txn, dropped)
    return dropped


def principal_state(txn: Any) -> int:
    return counter(txn, "principal")


def _email(txn: Any, account_id: str | None) -> str | None:
    if account_id is None:
        return None
    value = txn.fetchvalue(
        "SELECT address FROM account_addresses WHERE account_id = ? AND is_alias = 0 ORDER BY position LIMIT 1",
        (account_id,),
    )
    return None if value is None else str(value)


def get_principals(txn: Any, ids: Iterable[str] | None = None) -> list[PrincipalRecord]:
    """
    The live Principals with these ids (every one for C{ids=None}).
    """
    rows = txn.fetchall(f"SELECT {_COLUMNS} FROM principals p WHERE p.destroyed = 0 ORDER BY p.id", ())
    wanted = None if ids is None else set(ids)
    found = []
    for row in rows:
        if wanted is not None and row[0] not in wanted:
            continue
        found.append(PrincipalRecord(row[0], row[1], row[2], row[3], row[4], row[5], _email(txn, row[5])))
    return found


def create_principal(txn: Any, account_id: str) -> None:
    """
    Give a new account its individual Principal (an account creation hook).
    """
    name = txn.fetchvalue("SELECT name FROM accounts WHERE id = ?", (account_id,))
    modseq = bump(txn, "principal")
    txn.execute(
        "INSERT INTO principals (id, type, name, account_id, created_modseq, modseq) VALUES (?, ?, ?, ?, ?, ?)",
        (account_id, INDIVIDUAL, name, account_id, modseq, modseq),
    )


def individual_by_name(txn: Any, name: str) -> str:
    """
    The Principal id of the account named C{name}.

    @raise NoSuchPrincipal: there is none.
    """
    value = txn.fetchvalue("SELECT id FROM accounts WHERE name = ?", (name,))
    if value is None:
        raise NoSuchPrincipal(f"no account {name!r}")
    return str(value)


def group_by_name(txn: Any, name: str) -> str | None:
    value = txn.fetchvalue(
        "SELECT id FROM principals WHERE type = ? AND name = ? AND destroyed = 0", (GROUP, name)
    )
    return None if value is None else str(value)


def add_group(txn: Any, name: str, member_ids: Iterable[str] = ()) -> str:
    """
    The group named C{name}, created when there is none, with these members
    added; returns its id.
    """
    group_id = group_by_name(txn, name)
    if group_id is None:
        group_id = new_id("g")
        modseq = bump(txn, "principal")
        txn.execute(
            "INSERT INTO principals (id, type, name, created_modseq, modseq) VALUES (?, ?, ?, ?, ?)",
            (group_id, GROUP, name, modseq, modseq),
        )
    added = []
    for member_id in member_ids:
        if txn.fetchone(
            "SELECT 1 FROM principal_members WHERE group_id = ? AND member_id = ?", (group_id, member_id)
        ) is None:
            added.append(member_id)
    # A subscription to a Mailbox the new members cannot see yet (one an
    # older jmapd kept past a revocation) must not come back with the
    # group's rights.
    drop_lost_subscriptions(txn, _with_members(txn, added))
    for member_id in added:
        txn.execute("INSERT INTO principal_members (group_id, member_id) VALUES (?, ?)", (group_id, member_id))
    record_group_sight(txn, group_id, added)
    bump(txn, "acl")
    return group_id


def _with_members(txn: Any, principal_ids: Iterable[str]) -> list[str]:
    """
    These principals and, for those that are groups, their members.
    """
    found: list[str] = []
    for principal_id in principal_ids:
        found.extend([principal_id, *members_of(txn, principal_id)])
    return list(dict.fromkeys(found))


def remove_group_members(txn: Any, name: str, member_ids: Iterable[str]) -> None:
    group_id = group_by_name(txn, name)
    if group_id is None:
        raise NoSuchPrincipal(f"no group {name!r}")
    member_ids = list(member_ids)
    record_group_sight(txn, group_id, member_ids)
    for member_id in member_ids:
        txn.execute("DELETE FROM principal_members WHERE group_id = ? AND member_id = ?", (group_id, member_id))
    bump(txn, "acl")
    # Those who had a Mailbox through the group alone lose their
    # subscription to it with it.
    drop_lost_subscriptions(txn, _with_members(txn, member_ids))


def remove_group(txn: Any, name: str) -> None:
    """
    Destroy a group: its members and grants go, a tombstone stays for
    Principal/changes.
    """
    group_id = group_by_name(txn, name)
    if group_id is None:
        raise NoSuchPrincipal(f"no group {name!r}")
    members = members_of(txn, group_id)
    record_group_sight(txn, group_id, members)
    modseq = bump(txn, "principal")
    # Its members go, and it leaves the groups it was a member of.
    txn.execute("DELETE FROM principal_members WHERE group_id = ? OR member_id = ?", (group_id, group_id))
    txn.execute("DELETE FROM mailbox_acl WHERE principal_id = ?", (group_id,))
    txn.execute("UPDATE principals SET destroyed = 1, modseq = ? WHERE id = ?", (modseq, group_id))
    bump(txn, "acl")
    # Its members lose their subscriptions to what they had through it
    # alone.
    drop_lost_subscriptions(txn, members)


def list_groups(txn: Any) -> list[tuple[str, str, int]]:
    """
    Every group as C{(name, id, member count)}, by name.
    """
    rows = txn.fetchall(
        "SELECT p.name, p.id, (SELECT count(*) FROM principal_members m WHERE m.group_id = p.id)"
        " FROM principals p WHERE p.type = ? AND p.destroyed = 0 ORDER BY p.name",
        (GROUP,),
    )
    return [(str(r[0]), str(r[1]), int(r[2])) for r in rows]


def group_members(txn: Any, name: str) -> list[str]:
    """
    The names of a group's member accounts (and groups), sorted.
    """
    group_id = group_by_name(txn, name)
    if group_id is None:
        raise NoSuchPrincipal(f"no group {name!r}")
    rows = txn.fetchall(
        "SELECT p.name FROM principal_members m JOIN principals p ON p.id = m.member_id"
        " WHERE m.group_id = ? ORDER BY p.name",
        (group_id,),
    )
    return [str(r[0]) for r in rows]


def members_of(txn: Any, group_id: str) -> list[str]:
    """
    The ids of the members of a group, directly or through groups in it
    (those groups included).
    """
    return _reachable(txn, group_id, "group_id", "member_id")


def groups_of(txn: Any, principal_id: str) -> list[str]:
    """
    The ids of the groups C{principal_id} is a member of, directly or
    through other groups.
    """
    return _reachable(txn, principal_id, "member_id", "group_id")


def _reachable(txn: Any, start: str, source: str, target: str) -> list[str]:
    """
    Every principal reached from C{start} by following C{principal_members}
    rows from their C{source} column to their C{target} one, nearest
    first, each once (cycles end where they close).
    """
    found: list[str] = []
    frontier = [start]
    while frontier:
        rows = txn.fetchall(
            f"SELECT {target} FROM principal_members WHERE {source} IN ({marks(len(frontier))})", tuple(frontier)
        )
        frontier = list(dict.fromkeys(r[0] for r in rows if r[0] not in found and r[0] != start))
        found.extend(frontier)
    return found


def changes_since(txn: Any, since: int) -> tuple[list[str], list[str], list[str]]:
    """
    The Principals created, updated and destroyed after state C{since}.
    """
    created, updated, destroyed = [], [], []
    for object_id, created_modseq, is_destroyed in txn.fetchall(
        "SELECT id, created_modseq, destroyed FROM principals WHERE modseq > ? ORDER BY modseq, id", (since,)
    ):
        if is_destroyed:
            if int(created_modseq) <= since:
                destroyed.append(object_id)
        elif int(created_modseq) > since:
            created.append(object_id)
        else:
            updated.append(object_id)
    return created, updated, destroyed


def update_principal(txn: Any, principal_id: str, **values: Any) -> None:
    """
    Store C{description}, C{time_zone} (or C{name}) of a Principal.
    """
    modseq = bump(txn, "principal")
    for column, value in values.items():
        assert column in ("name", "description", "time_zone")
        txn.execute(f"UPDATE principals SET {column} = ? WHERE id = ?", (value, principal_id))
    txn.execute("UPDATE principals SET modseq = ? WHERE id = ?", (modseq, principal_id))


# -- sight: what a user other than the owner may have gained or lost ---------

#: The types whose sight L{record_sight} keeps (the names of the changelog).
MAILBOX = "Mailbox"
THREAD = "Thread"
EMAIL = "Email"

READ = "mayReadItems"


def grantees(txn: Any, account_id: str, mailbox_ids: Iterable[str], right: str | None = None) -> set[str]:
    """
    The principals (users and groups) holding C{right} (any right for
    C{None}) on at least one of these Mailboxes.
    """
    wanted = list(dict.fromkeys(mailbox_ids))
    found: set[str] = set()
    for chunk in chunks(wanted):
        for principal_id, rights in txn.fetchall(
            f"SELECT principal_id, rights FROM mailbox_acl WHERE account_id = ? AND mailbox_id IN ({marks(len(chunk))})",
            (account_id, *chunk),
        ):
            if right is None or right in str(rights).split(","):
                found.add(str(principal_id))
    return found


def record_sight(
    txn: Any, account_id: str, type_name: str, principal_ids: Iterable[str], object_ids: Iterable[str], modseq: int
) -> None:
    """
    Note that these objects may have come into or gone out of the sight
    of these principals at C{modseq} (the state of C{type_name} right
    after the change).
    """
    rows = [
        (account_id, principal_id, type_name, object_id, modseq)
        for principal_id in sorted(set(principal_ids))
        for object_id in sorted(set(object_ids))
    ]
    if rows:
        txn.executemany(
            "INSERT INTO sharing_sight (account_id, principal_id, type, object_id, modseq) VALUES (?, ?, ?, ?, ?)",
            rows,
        )


def record_mailbox_contents_sight(
    txn: Any, account_id: str, mailbox_ids: Iterable[str], principal_ids: Iterable[str]
) -> None:
    """
    These principals' mayReadItems on these Mailboxes changed: every
    Email in them and its Thread may have come into or gone out of their
    sight.  Moves the Email and Thread states (nothing of the owner's
    changed, but what a grantee sees did).
    """
    principal_ids = sorted(set(principal_ids))
    mailbox_ids = sorted(set(mailbox_ids))
    if not principal_ids or not mailbox_ids:
        return
    prune_sight(txn, account_id)
    email_modseq = changelog.touch_state(txn, account_id, EMAIL)
    thread_modseq = changelog.touch_state(txn, account_id, THREAD)
    for mailbox_id in mailbox_ids:
        for principal_id in principal_ids:
            txn.execute(
                "INSERT INTO sharing_sight (account_id, principal_id, type, object_id, modseq)"
                " SELECT ?, ?, ?, email_id, ? FROM email_mailboxes WHERE account_id = ? AND mailbox_id = ?",
                (account_id, principal_id, EMAIL, email_modseq, account_id, mailbox_id),
            )
            txn.execute(
                "INSERT INTO sharing_sight (account_id, principal_id, type, object_id, modseq)"
                " SELECT DISTINCT ?, ?, ?, e.thread_id, ? FROM email_mailboxes m"
                " JOIN emails e ON e.account_id = m.account_id AND e.id = m.email_id"
                " WHERE m.account_id = ? AND m.mailbox_id = ?",
                (account_id, principal_id, THREAD, thread_modseq, account_id, mailbox_id),
            )


def record_group_sight(txn: Any, group_id: str, member_ids: Iterable[str]) -> None:
    """
    These members join or leave a group: they (and the members of those
    that are groups) gain or lose its rights, and those of every group it
    is a member of however indirectly (whose members they become or stop
    being), on every Mailbox shared with any of these groups.  Each such
    Mailbox is recorded as updated in its account (so the Mailbox states
    and query states move), and the sight of the Mailbox, and of its
    Emails and Threads where one of these groups may read them, noted.
    """
    users = sorted(_with_members(txn, member_ids))
    if not users:
        return
    # L{groups_of} stops where a cycle of memberships closes.
    granted_to = (group_id, *groups_of(txn, group_id))
    readable: dict[tuple[str, str], bool] = {}
    for account_id, mailbox_id, rights in txn.fetchall(
        f"SELECT account_id, mailbox_id, rights FROM mailbox_acl WHERE principal_id IN ({marks(len(granted_to))})",
        granted_to,
    ):
        key = (str(account_id), str(mailbox_id))
        readable[key] = readable.get(key, False) or READ in str(rights).split(",")
    by_account: dict[str, list[tuple[str, bool]]] = {}
    for (account_id, mailbox_id), may_read in sorted(readable.items()):
        by_account.setdefault(account_id, []).append((mailbox_id, may_read))
    # Accounts are locked in sorted order, as everywhere.
    for account_id, mailboxes in by_account.items():
        txn.lock_account(account_id)
        for mailbox_id, _readable in mailboxes:
            modseq = changelog.record_change(txn, account_id, MAILBOX, mailbox_id, changelog.UPDATED)
            record_sight(txn, account_id, MAILBOX, users, [mailbox_id], modseq)
        record_mailbox_contents_sight(txn, account_id, [m for m, readable in mailboxes if readable], users)


def sighted(txn: Any, account_id: str, type_name: str, principal_ids: Iterable[str], since: int, until: int) -> set[str]:
    """
    The objects of C{type_name} that may have come into or gone out of
    the sight of any of these principals after state C{since}, up to
    state C{until}.
    """
    ids = sorted(set(principal_ids))
    if not ids or until <= since:
        return set()
    marks = ", ".join("?" * len(ids))
    rows = txn.fetchall(
        "SELECT DISTINCT object_id FROM sharing_sight WHERE account_id = ? AND type = ? AND modseq > ?"
        f" AND modseq <= ? AND principal_id IN ({marks})",
        (account_id, type_name, since, until, *ids),
    )
    return {str(row[0]) for row in rows}


def prune_sight(txn: Any, account_id: str) -> None:
    """
    Drop what no /changes can ask about any more: rows at or below the
    compaction floor of their type (older states get cannotCalculateChanges).
    """
    txn.flush()
    txn.execute(
        "DELETE FROM sharing_sight WHERE account_id = ? AND modseq <= (SELECT coalesce(max(min_modseq), 0)"
        " FROM states WHERE states.account_id = sharing_sight.account_id AND states.type = sharing_sight.type)",
        (account_id,),
    )


accounts.account_created_hooks.append(create_principal)
