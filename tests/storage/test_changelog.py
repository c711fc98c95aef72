"""
Tests for L{jmapd.storage.changelog}: modseqs, per-type states, /changes
answers and compaction.
"""

from twisted.trial.unittest import SynchronousTestCase

from jmapd.storage import accounts, changelog
from jmapd.storage.changelog import CREATED, DESTROYED, UPDATED, CannotCalculateChanges
from tests import pg
from tests.storage.test_database import make_database


class ChangelogTests(SynchronousTestCase):
    def setUp(self):
        self.database = make_database(self, account_hooks=False)
        self.account = self.database.run_sync(accounts.add_account, "alice", None, write=True).id

    def record(self, type_name, object_id, kind, props=True):
        return self.database.run_sync(
            changelog.record_change, self.account, type_name, object_id, kind, props, write=True
        )

    def changes(self, type_name, since, max_changes=100):
        return self.database.run_sync(changelog.changes_since, self.account, type_name, since, max_changes)

    def modseq(self, type_name):
        return self.database.run_sync(changelog.get_modseq, self.account, type_name)

    def test_modseq_increments(self):
        """
        Each change takes the next modseq of the account, whatever its
        type.
        """
        self.assertEqual(
            [
                self.record("Note", "n1", CREATED),
                self.record("Tag", "t1", CREATED),
                self.record("Note", "n1", UPDATED),
            ],
            [1, 2, 3],
        )

    def test_states_per_type(self):
        """
        A type's state is the modseq of its own last change; a type never
        changed is at 0.
        """
        self.record("Note", "n1", CREATED)
        self.record("Tag", "t1", CREATED)
        self.assertEqual(self.modseq("Note"), 1)
        self.assertEqual(self.modseq("Tag"), 2)
        self.assertEqual(self.modseq("Other"), 0)
        self.assertEqual(self.database.run_sync(changelog.get_states, self.account), {"Note": 1, "Tag": 2})

    def test_changed_states_collected(self):
        """
        The transaction collects the states it changed, for push after the
        commit.
        """

        def work(txn):
            changelog.record_change(txn, self.account, "Note", "n1", CREATED)
            changelog.record_change(txn, self.account, "Note", "n2", CREATED)
            changelog.touch_state(txn, self.account, "Query")
            return txn.changed_states

        self.assertEqual(self.database.run_sync(work, write=True), {self.account: {"Note": 2, "Query": 3}})

    def test_changes_exact(self):
        """
        Since a state, created, updated and destroyed list each changed
        object once, in the right list.
        """
        self.record("Note", "old1", CREATED)
        self.record("Note", "old2", CREATED)
        self.record("Note", "old3", CREATED)
        since = self.modseq("Note")
        self.record("Note", "new", CREATED)
        self.record("Note", "new", UPDATED)
        self.record("Note", "old1", UPDATED)
        self.record("Note", "old1", UPDATED)
        self.record("Note", "old2", DESTROYED)
        changes = self.changes("Note", since)
        self.assertEqual(changes.created, ["new"])
        self.assertEqual(changes.updated, ["old1"])
        self.assertEqual(changes.destroyed, ["old2"])
        self.assertFalse(changes.has_more)
        self.assertEqual(changes.old_modseq, since)
        self.assertEqual(changes.new_modseq, self.modseq("Note"))

    def test_created_then_destroyed_omitted(self):
        """
        An object created and destroyed since the state is in no list.
        """
        since = self.modseq("Note")
        self.record("Note", "brief", CREATED)
        self.record("Note", "brief", DESTROYED)
        changes = self.changes("Note", since)
        self.assertEqual((changes.created, changes.updated, changes.destroyed), ([], [], []))

    def test_other_types_not_reported(self):
        """
        Changes to other types are not in a type's changes.
        """
        self.record("Tag", "t1", CREATED)
        changes = self.changes("Note", 0)
        self.assertEqual(changes.created, [])

    def test_props_changed(self):
        """
        An update that touched only counters leaves props_changed false.
        """
        self.record("Note", "n1", CREATED)
        since = self.modseq("Note")
        self.record("Note", "n1", UPDATED, props=False)
        self.assertFalse(self.changes("Note", since).props_changed)
        self.record("Note", "n1", UPDATED)
        self.assertTrue(self.changes("Note", since).props_changed)

    def test_paging(self):
        """
        With more changes than max_changes, has_more is set and new_modseq
        is an intermediate state from which the rest follow.
        """
        for i in range(5):
            self.record("Note", f"n{i}", CREATED)
        first = self.changes("Note", 0, 2)
        self.assertEqual((first.created, first.has_more), (["n0", "n1"], True))
        self.assertEqual(first.new_modseq, 2)
        second = self.changes("Note", first.new_modseq, 2)
        self.assertEqual((second.created, second.has_more), (["n2", "n3"], True))
        third = self.changes("Note", second.new_modseq, 2)
        self.assertEqual((third.created, third.has_more), (["n4"], False))
        self.assertEqual(third.new_modseq, 5)

    def test_future_or_negative_state(self):
        """
        A state after the current one, or below 0, cannot be answered.
        """
        self.record("Note", "n1", CREATED)
        self.assertRaises(CannotCalculateChanges, self.changes, "Note", 2)
        self.assertRaises(CannotCalculateChanges, self.changes, "Note", -1)

    def test_update_of_unlogged_object(self):
        """
        An update of an object with no changelog row counts as an update
        for every client.
        """
        self.record("Note", "legacy", UPDATED)
        self.assertEqual(self.changes("Note", 0).updated, ["legacy"])

    def test_recreated_id(self):
        """
        An id created again after it was destroyed is reported created
        (not a crash on the tombstone).
        """
        self.record("Note", "single", CREATED)
        self.record("Note", "single", DESTROYED)
        since = self.modseq("Note")
        self.record("Note", "single", CREATED)
        self.assertEqual(self.changes("Note", since).created, ["single"])
        self.assertEqual(self.changes("Note", 0).created, ["single"])

    def test_unknown_kind(self):
        """
        A change kind other than created/updated/destroyed is a ValueError.
        """
        self.assertRaises(ValueError, self.record, "Note", "x", "moved")

    def test_compaction(self):
        """
        Compaction drops the oldest tombstones beyond the limit and raises
        the floor only of the types whose tombstones went: older states of
        those answer CannotCalculateChanges, other types are untouched.
        """
        self.record("Tag", "t1", CREATED)  # 1
        self.record("Note", "n1", CREATED)  # 2
        self.record("Note", "n2", CREATED)  # 3
        self.record("Note", "n1", DESTROYED)  # 4
        self.record("Tag", "t2", CREATED)  # 5
        self.record("Note", "n2", DESTROYED)  # 6
        self.record("Tag", "t1", DESTROYED)  # 7
        self.assertEqual(self.database.run_sync(changelog.accounts_over, 2), [self.account])
        dropped = self.database.run_sync(changelog.compact, self.account, 1, write=True)
        self.assertEqual(dropped, 2)
        self.assertEqual(self.database.run_sync(changelog.accounts_over, 1), [])
        for since in (0, 5):
            self.assertRaises(CannotCalculateChanges, self.changes, "Note", since)
        self.assertEqual(self.changes("Note", 6).destroyed, [])
        # Tag's tombstone (modseq 7) was kept: every Tag state still works.
        self.assertEqual(self.changes("Tag", 0).created, ["t2"])
        self.assertEqual(self.changes("Tag", 1).destroyed, ["t1"])

    def test_compaction_under_limit(self):
        """
        Nothing is dropped while the tombstones are within the limit.
        """
        self.record("Note", "n1", CREATED)
        self.record("Note", "n1", DESTROYED)
        self.assertEqual(self.database.run_sync(changelog.compact, self.account, 1, write=True), 0)
        self.assertEqual(self.changes("Note", 0).created, [])


class HeldWritesTests(SynchronousTestCase):
    """
    A transaction holds its changelog writes (L{jmapd.storage.pending})
    and writes them together, before it commits or reads them back.
    """

    def setUp(self):
        self.database = make_database(self, account_hooks=False)
        self.account = self.database.run_sync(accounts.add_account, "alice", None, write=True).id
        self.other = self.database.run_sync(accounts.add_account, "bob", None, write=True).id

    def counting(self, txn):
        """
        Count the statements C{txn} runs from now on, by their first word
        and table (C{executemany} counts once).
        """
        seen = []
        execute, executemany = txn.execute, txn.executemany

        def counted_execute(sql, params=()):
            seen.append(sql.split(" (")[0].split(" SET")[0])
            return execute(sql, params)

        def counted_executemany(sql, rows):
            seen.append(sql.split(" (")[0].split(" SET")[0])
            return executemany(sql, rows)

        txn.execute, txn.executemany = counted_execute, counted_executemany
        return seen

    def test_written_together(self):
        """
        Many changes of two accounts cost one read of each account's
        modseq and, at the commit, one write each of the modseqs, the
        changelog rows and the states, instead of three statements per
        change; what is committed is what one-by-one writes gave.
        """

        def work(txn):
            seen = self.counting(txn)
            for number in range(5):
                changelog.record_change(txn, self.account, "Note", f"n{number}", CREATED)
                changelog.record_change(txn, self.other, "Note", f"m{number}", CREATED)
            changelog.touch_state(txn, self.account, "Query")
            txn.flush()
            return seen

        seen = self.database.run_sync(work, write=True)
        # The engine's account locks (PostgreSQL's) are not part of it.
        self.assertEqual(
            sorted(sql for sql in seen if "FOR NO KEY UPDATE" not in sql),
            sorted(
                [
                    "SELECT modseq FROM accounts WHERE id = ?",
                    "SELECT modseq FROM accounts WHERE id = ?",
                    "UPDATE accounts",
                    "INSERT INTO changelog",
                    "INSERT INTO states",
                ]
            ),
        )
        states = self.database.run_sync(changelog.get_states, self.account)
        self.assertEqual(states, {"Note": 5, "Query": 6})
        self.assertEqual(self.database.run_sync(changelog.get_states, self.other), {"Note": 5})
        changes = self.database.run_sync(changelog.changes_since, self.account, "Note", 0, 100)
        self.assertEqual(changes.created, [f"n{number}" for number in range(5)])
        # The next transaction continues from the written modseq.
        self.assertEqual(
            self.database.run_sync(changelog.record_change, self.account, "Note", "later", CREATED, write=True), 7
        )

    def test_read_back_in_the_transaction(self):
        """
        Reading the states or the changes in the transaction that made
        them sees them.
        """

        def work(txn):
            changelog.record_change(txn, self.account, "Note", "n1", CREATED)
            changelog.record_change(txn, self.account, "Note", "n1", UPDATED)
            return (
                changelog.get_modseq(txn, self.account, "Note"),
                changelog.changes_since(txn, self.account, "Note", 0, 10).created,
            )

        self.assertEqual(self.database.run_sync(work, write=True), (2, ["n1"]))

    def test_rolled_back_savepoint(self):
        """
        The changes recorded in a savepoint that is rolled back are gone,
        those before it stay, even when the savepoint wrote them out
        meanwhile (a read in it); its modseqs are given out again.
        """

        def work(txn):
            changelog.record_change(txn, self.account, "Note", "kept", CREATED)
            try:
                with txn.savepoint():
                    changelog.record_change(txn, self.account, "Note", "lost", CREATED)
                    changelog.record_change(txn, self.other, "Note", "lost", CREATED)
                    self.assertEqual(changelog.get_modseq(txn, self.account, "Note"), 2)
                    changelog.record_change(txn, self.account, "Tag", "lost", CREATED)
                    raise ValueError("undo")
            except ValueError:
                pass
            return changelog.record_change(txn, self.account, "Note", "after", CREATED)

        self.assertEqual(self.database.run_sync(work, write=True), 2)
        self.assertEqual(self.database.run_sync(changelog.get_states, self.account), {"Note": 2})
        self.assertEqual(self.database.run_sync(changelog.get_states, self.other), {})
        changes = self.database.run_sync(changelog.changes_since, self.account, "Note", 0, 10)
        self.assertEqual(changes.created, ["kept", "after"])
        self.assertEqual(
            self.database.run_sync(changelog.record_change, self.other, "Note", "first", CREATED, write=True), 1
        )

    def test_rolled_back_transaction(self):
        """
        A transaction that fails leaves no modseq, changelog row or state.
        """

        def work(txn):
            changelog.record_change(txn, self.account, "Note", "n1", CREATED)
            raise ValueError("undo")

        self.assertRaises(ValueError, self.database.run_sync, work, write=True)
        self.assertEqual(self.database.run_sync(changelog.get_states, self.account), {})
        self.assertEqual(
            self.database.run_sync(changelog.record_change, self.account, "Note", "n1", CREATED, write=True), 1
        )

    def test_removed_account(self):
        """
        Removing an account after changing it in the same transaction
        removes it; nothing held for it is written afterwards.
        """

        def work(txn):
            changelog.record_change(txn, self.account, "Note", "n1", CREATED)
            return accounts.remove_account(txn, "alice")

        self.assertEqual(self.database.run_sync(work, write=True), self.account)
        self.assertIsNone(self.database.run_sync(accounts.get_account_by_name, "alice"))

    def test_unknown_account(self):
        """
        A change in an account that does not exist is a KeyError.
        """
        self.assertRaises(
            KeyError, self.database.run_sync, changelog.record_change, "nobody", "Note", "n", CREATED, write=True
        )


# The same tests on PostgreSQL (see tests/pg.py).
pg.add_postgresql_variants(globals(), ChangelogTests, HeldWritesTests)
