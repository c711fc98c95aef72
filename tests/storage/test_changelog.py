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


# The same tests on PostgreSQL (see tests/pg.py).
pg.add_postgresql_variants(globals(), ChangelogTests)
