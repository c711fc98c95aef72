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

The writes are held by the transaction and made together before it
commits or reads them (L{jmapd.storage.pending}): code that reads the
changelog, the states or an account's modseq with SQL of its own calls
L{jmapd.storage.database.Transaction.flush} first.
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
    # The account's lock makes its modseq ours until the transaction ends:
    # it is read once, then counted (written back before the commit).
    txn.lock_account(account_id)
    return int(txn.pending.next_modseq(txn, account_id))


# Each kind of change as one upsert, so that the rows of a transaction are
# written with executemany.  An update or destroy of an object that has no
# row (it predates the changelog, or its row was compacted) inserts one
# with created_modseq 0: it counts as updated (or destroyed) for every
# client.  A creation takes over a tombstone (ids derived from content, or
# a singleton, may come back after a destroy).
_UPSERT = (
    "INSERT INTO changelog (account_id, type, object_id, created_modseq, modseq, props_modseq, destroyed)"
    " VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (account_id, type, object_id) DO UPDATE SET "
)
_CREATE = _UPSERT + (
    "created_modseq = excluded.created_modseq, modseq = excluded.modseq,"
    " props_modseq = excluded.props_modseq, destroyed = 0"
)
_UPDATE = _UPSERT + "modseq = excluded.modseq, props_modseq = excluded.props_modseq"
_UPDATE_COUNTERS = _UPSERT + "modseq = excluded.modseq"
_DESTROY = _UPSERT + "modseq = excluded.modseq, props_modseq = excluded.props_modseq, destroyed = 1"


def record_change(
    txn: Any, account_id: str, type_name: str, object_id: str, kind: str, props: bool = True
) -> int:
    """
    Record that C{object_id} of C{type_name} was created, updated or
    destroyed, and return the modseq this change took.

    @param props: C{False} when an update touched only counters.
    """
    if kind == CREATED:
        sql, created, destroyed = _CREATE, True, 0
    elif kind == UPDATED:
        sql, created, destroyed = (_UPDATE if props else _UPDATE_COUNTERS), False, 0
    elif kind == DESTROYED:
        sql, created, destroyed = _DESTROY, False, 1
    else:
        raise ValueError(f"unknown change kind {kind!r}")
    modseq = _bump(txn, account_id)
    txn.pending.add_row(
        sql, (account_id, type_name, object_id, modseq if created else 0, modseq, modseq, destroyed)
    )
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
    txn.pending.set_state(account_id, type_name, modseq)
    changed = txn.__dict__.setdefault("changed_states", {})
    changed.setdefault(account_id, {})[type_name] = modseq


def get_modseq(txn: Any, account_id: str, type_name: str) -> int:
    """
    The modseq of the last change of C{type_name} in the account (0 if none).
    """
    txn.flush()
    return int(
        txn.fetchvalue(
            "SELECT modseq FROM states WHERE account_id = ? AND type = ?", (account_id, type_name), 0
        )
    )


def get_states(txn: Any, account_id: str) -> dict[str, int]:
    """
    Every type's modseq in the account.
    """
    txn.flush()
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
    txn.flush()
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
    txn.flush()
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
    txn.flush()
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
    txn.flush()
    return [
        row[0]
        for row in txn.fetchall(
            "SELECT account_id FROM changelog WHERE destroyed = 1 GROUP BY account_id HAVING count(*) > ?",
            (max_entries,),
        )
    ]
