# -*- test-case-name: tests.storage.test_changelog -*-
"""
The changelog writes of one transaction, held until it needs them.

Every change takes the next modseq of its account, and moves a changelog
row and a state (L{jmapd.storage.changelog}).  Written one by one, a
delivered Email cost eight statements for that alone (three modseqs,
two changelog rows, three states), on PostgreSQL eight round trips while
the account is locked.  A transaction instead keeps them here:

 - the account's modseq is read once (the transaction holds the
   account's lock: L{jmapd.storage.database.Transaction.lock_account}),
   then counted in memory;
 - changelog rows and states wait in order, and are written by
   L{PendingChanges.write} with one C{executemany} per statement (the
   accounts' modseqs too), just before the transaction commits, or
   before anything in the transaction reads the changelog, the states or
   an account's modseq (the readers in L{jmapd.storage.changelog} and
   elsewhere call L{jmapd.storage.database.Transaction.flush} first).

A savepoint takes a L{PendingChanges.snapshot} when it starts and puts it
back when it is rolled back: the database then holds what it held at the
start of the savepoint, and so does this buffer, whether or not it was
written in between.  The modseqs taken inside the savepoint are free again,
as they were when each change updated the account row (the rolled-back
update took them back).
"""

from __future__ import annotations

from typing import Any

from attrs import define, field

#: What L{PendingChanges.snapshot} returns: copies of its four fields.
Snapshot = tuple[dict[str, int], dict[str, int], list[tuple[str, tuple[Any, ...]]], dict[tuple[str, str], int]]


@define
class PendingChanges:
    """
    What one transaction changed in the changelog and has not written yet.

    @ivar modseqs: each account's last modseq given out in the transaction.
    @ivar stored: each account's modseq as its row holds it now.
    @ivar rows: C{(sql, parameters)} of each changelog write, in order.
    @ivar states: C{(account id, type name)} -> that type's new modseq.
    """

    modseqs: dict[str, int] = field(factory=dict)
    stored: dict[str, int] = field(factory=dict)
    rows: list[tuple[str, tuple[Any, ...]]] = field(factory=list)
    states: dict[tuple[str, str], int] = field(factory=dict)

    def next_modseq(self, txn: Any, account_id: str) -> int:
        """
        The account's next modseq (its lock must be held by C{txn}).

        @raise KeyError: there is no such account.
        """
        last = self.modseqs.get(account_id)
        if last is None:
            row = txn.fetchone("SELECT modseq FROM accounts WHERE id = ?", (account_id,))
            if row is None:
                raise KeyError(account_id)
            last = self.stored[account_id] = int(row[0])
        self.modseqs[account_id] = last + 1
        return last + 1

    def add_row(self, sql: str, parameters: tuple[Any, ...]) -> None:
        self.rows.append((sql, parameters))

    def set_state(self, account_id: str, type_name: str, modseq: int) -> None:
        self.states[account_id, type_name] = modseq

    def write(self, txn: Any) -> None:
        """
        Write everything held: the accounts' modseqs, the changelog rows
        (consecutive rows of one statement in one C{executemany}), the
        states.
        """
        moved = [
            (modseq, account_id)
            for account_id, modseq in self.modseqs.items()
            if modseq != self.stored.get(account_id)
        ]
        if moved:
            txn.executemany("UPDATE accounts SET modseq = ? WHERE id = ?", moved)
            self.stored.update((account_id, modseq) for modseq, account_id in moved)
        rows, self.rows = self.rows, []
        start = 0
        while start < len(rows):
            sql = rows[start][0]
            end = start + 1
            while end < len(rows) and rows[end][0] == sql:
                end += 1
            txn.executemany(sql, [parameters for _, parameters in rows[start:end]])
            start = end
        states, self.states = self.states, {}
        if states:
            txn.executemany(
                "INSERT INTO states (account_id, type, modseq, min_modseq) VALUES (?, ?, ?, 0)"
                " ON CONFLICT (account_id, type) DO UPDATE SET modseq = excluded.modseq",
                [(account_id, type_name, modseq) for (account_id, type_name), modseq in states.items()],
            )

    @property
    def empty(self) -> bool:
        return not self.rows and not self.states and all(
            modseq == self.stored.get(account_id) for account_id, modseq in self.modseqs.items()
        )

    def snapshot(self) -> Snapshot:
        return dict(self.modseqs), dict(self.stored), list(self.rows), dict(self.states)

    def restore(self, snapshot: Snapshot) -> None:
        modseqs, stored, rows, states = snapshot
        self.modseqs, self.stored, self.rows, self.states = dict(modseqs), dict(stored), list(rows), dict(states)
