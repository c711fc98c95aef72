# -*- test-case-name: tests.storage.test_changelog -*-
"""
The per-account modification sequence (modseq) and the changelog.

Every change to an object takes the next modseq of its account and updates
the object's single changelog row in the same transaction as the change, so
a state string (the modseq of a type's last change) and the answer of
C{/changes} can never disagree with the data.

One row per object (not per change) keeps the log as small as the data:
an object's row says when it was created, when it last changed, when it
last changed in a property other than server-maintained counters, and
whether it is gone.  Tombstones of destroyed objects are compacted when an
account holds more than C{max-changelog-entries} of them; the states before
the newest compacted tombstone then get C{cannotCalculateChanges}.
"""

from __future__ import annotations

from typing import Any

from attrs import frozen

from jmapd.storage.sql import chunks, marks

CREATED = "created"
UPDATED = "updated"
DESTROYED = "destroyed"


class CannotCalculateChanges(Exception):
    """
    The changes since this state are no longer (or were never) known.
    """


@frozen
class Changes:
    """
    What changed for one data type between two states.

    @ivar props_changed: C{False} when every updated object changed only
        in server-maintained counter properties (Mailbox/changes reports
        C{updatedProperties} then).
    """

    old_modseq: int
    new_modseq: int
    has_more: bool
    created: list[str]
    updated: list[str]
    destroyed: list[str]
    props_changed: bool


def _bump(txn: Any, account_id: str) -> int:
    # The UPDATE locks the account row anyway; saying so lets later
    # lock_account calls of this transaction skip their query.
    txn.lock_account(account_id)
    # One statement (RETURNING: SQLite 3.35, PostgreSQL): a delivered
    # Email takes four modseqs, so this is on the hot path.  fetchall
    # runs the statement to its end: SQLite refuses to commit while a
    # writing statement is still open.
    rows = txn.fetchall("UPDATE accounts SET modseq = modseq + 1 WHERE id = ? RETURNING modseq", (account_id,))
    if not rows:
        raise KeyError(account_id)
    return int(rows[0][0])


def record_change(
    txn: Any, account_id: str, type_name: str, object_id: str, kind: str, props: bool = True
) -> int:
    """
    Record that C{object_id} of C{type_name} was created, updated or
    destroyed, and return the modseq this change took.

    @param props: C{False} when an update touched only counters.
    """
    modseq = _bump(txn, account_id)
    if kind == CREATED:
        # An id may come back after a destroy (ids derived from content, or
        # a singleton): its tombstone becomes the row of the new object.
        txn.execute(
            "INSERT INTO changelog (account_id, type, object_id, created_modseq, modseq, props_modseq, destroyed)"
            " VALUES (?, ?, ?, ?, ?, ?, 0)"
            " ON CONFLICT (account_id, type, object_id) DO UPDATE SET"
            " created_modseq = excluded.created_modseq, modseq = excluded.modseq,"
            " props_modseq = excluded.props_modseq, destroyed = 0",
            (account_id, type_name, object_id, modseq, modseq, modseq),
        )
    elif kind == UPDATED:
        if props:
            txn.execute(
                "UPDATE changelog SET modseq = ?, props_modseq = ? WHERE account_id = ? AND type = ? AND object_id = ?",
                (modseq, modseq, account_id, type_name, object_id),
            )
        else:
            txn.execute(
                "UPDATE changelog SET modseq = ? WHERE account_id = ? AND type = ? AND object_id = ?",
                (modseq, account_id, type_name, object_id),
            )
        if txn.rowcount == 0:
            # An object that predates the changelog (e.g. compacted): it
            # counts as updated for every client.
            txn.execute(
                "INSERT INTO changelog (account_id, type, object_id, created_modseq, modseq, props_modseq, destroyed)"
                " VALUES (?, ?, ?, 0, ?, ?, 0)",
                (account_id, type_name, object_id, modseq, modseq),
            )
    elif kind == DESTROYED:
        txn.execute(
            "UPDATE changelog SET modseq = ?, props_modseq = ?, destroyed = 1"
            " WHERE account_id = ? AND type = ? AND object_id = ?",
            (modseq, modseq, account_id, type_name, object_id),
        )
        if txn.rowcount == 0:
            txn.execute(
                "INSERT INTO changelog (account_id, type, object_id, created_modseq, modseq, props_modseq, destroyed)"
                " VALUES (?, ?, ?, 0, ?, ?, 1)",
                (account_id, type_name, object_id, modseq, modseq),
            )
    else:
        raise ValueError(f"unknown change kind {kind!r}")
    _set_state(txn, account_id, type_name, modseq)
    return modseq


def touch_state(txn: Any, account_id: str, type_name: str) -> int:
    """
    Give a type a new state without an object change (for example when a
    query result may have changed through another type).
    """
    modseq = _bump(txn, account_id)
    _set_state(txn, account_id, type_name, modseq)
    return modseq


def _set_state(txn: Any, account_id: str, type_name: str, modseq: int) -> None:
    txn.execute(
        "INSERT INTO states (account_id, type, modseq, min_modseq) VALUES (?, ?, ?, 0)"
        " ON CONFLICT (account_id, type) DO UPDATE SET modseq = excluded.modseq",
        (account_id, type_name, modseq),
    )
    changed = txn.__dict__.setdefault("changed_states", {})
    changed.setdefault(account_id, {})[type_name] = modseq


def get_modseq(txn: Any, account_id: str, type_name: str) -> int:
    """
    The modseq of the last change of C{type_name} in the account (0 if none).
    """
    return int(
        txn.fetchvalue(
            "SELECT modseq FROM states WHERE account_id = ? AND type = ?", (account_id, type_name), 0
        )
    )


def get_states(txn: Any, account_id: str) -> dict[str, int]:
    """
    Every type's modseq in the account.
    """
    return {
        row[0]: int(row[1])
        for row in txn.fetchall("SELECT type, modseq FROM states WHERE account_id = ?", (account_id,))
    }


def changes_since(
    txn: Any, account_id: str, type_name: str, since: int, max_changes: int
) -> Changes:
    """
    The objects of C{type_name} created, updated or destroyed after
    C{since}, at most C{max_changes} of them (then C{has_more} is set and
    C{new_modseq} is an intermediate state the client continues from).

    @raise CannotCalculateChanges: C{since} is before the compacted part of
        the log, or is not a state this account ever had.
    """
    row = txn.fetchone(
        "SELECT modseq, min_modseq FROM states WHERE account_id = ? AND type = ?", (account_id, type_name)
    )
    current, floor = (int(row[0]), int(row[1])) if row else (0, 0)
    if since > current or since < floor or since < 0:
        raise CannotCalculateChanges(f"state {since} is not known for {type_name}")
    rows = txn.fetchall(
        "SELECT object_id, created_modseq, modseq, props_modseq, destroyed FROM changelog"
        " WHERE account_id = ? AND type = ? AND modseq > ? ORDER BY modseq LIMIT ?",
        (account_id, type_name, since, max_changes + 1),
    )
    has_more = len(rows) > max_changes
    if has_more:
        rows = rows[:max_changes]
        new_modseq = int(rows[-1][2])
    else:
        new_modseq = current
    created: list[str] = []
    updated: list[str] = []
    destroyed: list[str] = []
    props_changed = False
    for object_id, created_modseq, _modseq, props_modseq, is_destroyed in rows:
        if is_destroyed:
            if created_modseq <= since:
                destroyed.append(object_id)
        elif created_modseq > since:
            created.append(object_id)
        else:
            updated.append(object_id)
            if props_modseq > since:
                props_changed = True
    return Changes(
        old_modseq=since,
        new_modseq=new_modseq,
        has_more=has_more,
        created=created,
        updated=updated,
        destroyed=destroyed,
        props_changed=props_changed,
    )


def props_changed_since(txn: Any, account_id: str, type_name: str, object_ids: list[str], since: int) -> set[str]:
    """
    Of these objects, those whose properties (not only their counters)
    changed after modseq C{since}.
    """
    found: set[str] = set()
    for chunk in chunks(object_ids):
        rows = txn.fetchall(
            f"SELECT object_id FROM changelog WHERE account_id = ? AND type = ? AND object_id IN ({marks(len(chunk))})"
            " AND props_modseq > ?",
            (account_id, type_name, *chunk, since),
        )
        found.update(row[0] for row in rows)
    return found


def compact(txn: Any, account_id: str, max_entries: int) -> int:
    """
    Drop the oldest tombstones beyond C{max_entries} and raise the floor of
    the affected types, so /changes from an older state answers
    cannotCalculateChanges instead of silently missing a destroy.

    @return: how many tombstones were dropped.
    """
    txn.lock_account(account_id)
    count = int(
        txn.fetchvalue(
            "SELECT count(*) FROM changelog WHERE account_id = ? AND destroyed = 1", (account_id,), 0
        )
    )
    excess = count - max_entries
    if excess <= 0:
        return 0
    rows = txn.fetchall(
        "SELECT type, object_id, modseq FROM changelog WHERE account_id = ? AND destroyed = 1"
        " ORDER BY modseq LIMIT ?",
        (account_id, excess),
    )
    floors: dict[str, int] = {}
    for type_name, object_id, modseq in rows:
        floors[type_name] = max(floors.get(type_name, 0), int(modseq))
        txn.execute(
            "DELETE FROM changelog WHERE account_id = ? AND type = ? AND object_id = ?",
            (account_id, type_name, object_id),
        )
    for type_name, floor in floors.items():
        txn.execute(
            "UPDATE states SET min_modseq = ? WHERE account_id = ? AND type = ? AND min_modseq < ?",
            (floor, account_id, type_name, floor),
        )
    return len(rows)


def accounts_over(txn: Any, max_entries: int) -> list[str]:
    """
    The accounts holding more than C{max_entries} tombstones.
    """
    return [
        row[0]
        for row in txn.fetchall(
            "SELECT account_id FROM changelog WHERE destroyed = 1 GROUP BY account_id HAVING count(*) > ?",
            (max_entries,),
        )
    ]
