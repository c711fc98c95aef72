"""
Tests for L{jmapd.storage.mailboxes}: default Mailboxes of a new account,
the incremental counts, the changelog entries and the destroy hooks.
"""

from twisted.trial.unittest import SynchronousTestCase

from jmapd.storage import accounts, changelog, mailboxes
from tests import pg
from tests.storage.test_database import make_database


class MailboxStorageTests(SynchronousTestCase):
    def setUp(self):
        self.database = make_database(self)
        self.account = self.database.run_sync(accounts.add_account, "alice", None, write=True).id

    def call(self, fn, *args):
        return self.database.run_sync(fn, self.account, *args, write=True)

    def modseq(self):
        return self.call(changelog.get_modseq, mailboxes.TYPE_NAME)

    def test_default_mailboxes(self):
        """
        A new account has Inbox, Drafts, Sent, Archive, Junk and Trash with
        their roles, empty and subscribed, Inbox sorted first.
        """
        found = self.call(mailboxes.get_mailboxes)
        self.assertEqual(
            sorted((m.name, m.role) for m in found),
            [
                ("Archive", "archive"),
                ("Drafts", "drafts"),
                ("Inbox", "inbox"),
                ("Junk", "junk"),
                ("Sent", "sent"),
                ("Trash", "trash"),
            ],
        )
        self.assertTrue(all(m.is_subscribed and m.parent_id is None for m in found))
        self.assertTrue(all(self.call(mailboxes.get_counts, m.id) == (0, 0, 0, 0) for m in found))
        first = min(found, key=lambda m: m.sort_order)
        self.assertEqual(first.role, "inbox")
        self.assertEqual(len({m.sort_order for m in found}), 6)

    def test_default_mailboxes_recorded_as_created(self):
        """
        The default Mailboxes are in the changelog as created, so the
        Mailbox state of a new account is not 0 and /changes from 0 lists
        them all.
        """
        changes = self.call(changelog.changes_since, mailboxes.TYPE_NAME, 0, 100)
        self.assertEqual(sorted(changes.created), sorted(self.call(mailboxes.mailbox_ids)))
        self.assertEqual(len(changes.created), 6)
        self.assertGreater(self.modseq(), 0)

    def test_defaults_per_account(self):
        """
        Each account gets its own default Mailboxes; the queries of one
        account never see another's.
        """
        other = self.database.run_sync(accounts.add_account, "bob", None, write=True).id
        mine = self.call(mailboxes.mailbox_ids)
        theirs = self.database.run_sync(mailboxes.mailbox_ids, other)
        self.assertEqual(len(theirs), 6)
        self.assertFalse(mine & theirs)
        inbox = self.call(mailboxes.find_by_role, "inbox")
        self.assertFalse(self.database.run_sync(mailboxes.mailbox_exists, other, inbox))
        self.assertTrue(self.call(mailboxes.mailbox_exists, inbox))

    def test_find_by_role(self):
        """
        find_by_role gives the id of the Mailbox with that role, or None.
        """
        inbox = self.call(mailboxes.find_by_role, "inbox")
        self.assertEqual(self.call(mailboxes.get_mailbox, inbox).name, "Inbox")
        self.assertIsNone(self.call(mailboxes.find_by_role, "flagged"))

    def test_get_mailboxes_by_ids(self):
        """
        get_mailboxes with ids returns those that exist, each once, and
        skips unknown ids.
        """
        inbox = self.call(mailboxes.find_by_role, "inbox")
        found = self.call(mailboxes.get_mailboxes, [inbox, "nope", inbox])
        self.assertEqual([m.id for m in found], [inbox])

    def test_adjust_counts(self):
        """
        adjust_counts adds the four deltas to each Mailbox's counts, and
        negative deltas subtract.
        """
        inbox = self.call(mailboxes.find_by_role, "inbox")
        trash = self.call(mailboxes.find_by_role, "trash")
        self.call(mailboxes.adjust_counts, {inbox: (3, 2, 2, 1), trash: (1, 0, 1, 0)})
        self.call(mailboxes.adjust_counts, {inbox: (-1, -1, 0, -1)})
        self.assertEqual(self.call(mailboxes.get_counts, inbox), (2, 1, 2, 0))
        self.assertEqual(self.call(mailboxes.get_counts, trash), (1, 0, 1, 0))

    def test_adjust_counts_changelog(self):
        """
        Each Mailbox whose counts change is recorded as updated in counts
        only (props=False): /changes reports it updated with
        props_changed false.
        """
        inbox = self.call(mailboxes.find_by_role, "inbox")
        sent = self.call(mailboxes.find_by_role, "sent")
        since = self.modseq()
        self.call(mailboxes.adjust_counts, {inbox: (1, 1, 1, 1), sent: (1, 0, 1, 0)})
        changes = self.call(changelog.changes_since, mailboxes.TYPE_NAME, since, 100)
        self.assertEqual(sorted(changes.updated), sorted([inbox, sent]))
        self.assertEqual(changes.created, [])
        self.assertFalse(changes.props_changed)
        self.assertEqual(self.modseq(), since + 2)

    def test_adjust_counts_skips_zero(self):
        """
        An all-zero delta changes nothing and records nothing, so the
        Mailbox state stays the same.
        """
        inbox = self.call(mailboxes.find_by_role, "inbox")
        since = self.modseq()
        self.call(mailboxes.adjust_counts, {inbox: (0, 0, 0, 0)})
        self.assertEqual(self.modseq(), since)

    def test_adjust_counts_unknown_mailbox(self):
        """
        A delta for a Mailbox that does not exist is ignored and recorded
        nowhere.
        """
        since = self.modseq()
        self.call(mailboxes.adjust_counts, {"mnothere": (1, 1, 1, 1)})
        self.assertEqual(self.modseq(), since)
        self.assertRaises(KeyError, self.call, mailboxes.get_counts, "mnothere")

    def test_update_records_props(self):
        """
        update_mailbox stores the settable properties and records an
        update of properties (props_changed true), leaving the counts.
        """
        inbox = self.call(mailboxes.find_by_role, "inbox")
        self.call(mailboxes.adjust_counts, {inbox: (5, 1, 4, 1)})
        since = self.modseq()
        current = self.call(mailboxes.get_mailbox, inbox)
        self.call(
            mailboxes.update_mailbox,
            mailboxes.Mailbox(
                id=inbox, name="In", parent_id=None, role="inbox", sort_order=3, is_subscribed=False
            ),
        )
        stored = self.call(mailboxes.get_mailbox, inbox)
        self.assertEqual((stored.name, stored.sort_order, stored.is_subscribed), ("In", 3, False))
        self.assertEqual(self.call(mailboxes.get_counts, inbox), (5, 1, 4, 1))
        self.assertNotEqual(current, stored)
        changes = self.call(changelog.changes_since, mailboxes.TYPE_NAME, since, 100)
        self.assertEqual(changes.updated, [inbox])
        self.assertTrue(changes.props_changed)

    def test_add_and_children(self):
        """
        add_mailbox stores a child under its parent; has_children and
        count_mailboxes see it.
        """
        inbox = self.call(mailboxes.find_by_role, "inbox")
        self.assertFalse(self.call(mailboxes.has_children, inbox))
        child = self.call(mailboxes.add_mailbox, "Lists", inbox, None, 5, False)
        self.assertTrue(self.call(mailboxes.has_children, inbox))
        self.assertEqual(self.call(mailboxes.count_mailboxes), 7)
        stored = self.call(mailboxes.get_mailbox, child.id)
        self.assertEqual(stored, child)
        self.assertEqual((stored.parent_id, stored.sort_order, stored.is_subscribed), (inbox, 5, False))

    def test_destroy_runs_hooks_first(self):
        """
        destroy_mailbox calls every destroy hook with the account, the
        Mailbox id and remove_emails while the Mailbox still exists, then
        deletes it and records it destroyed.
        """
        calls = []

        def hook(txn, account_id, mailbox_id, remove_emails):
            calls.append((account_id, mailbox_id, remove_emails, mailboxes.mailbox_exists(txn, account_id, mailbox_id)))

        self.patch(mailboxes, "mailbox_destroy_hooks", [hook])
        trash = self.call(mailboxes.find_by_role, "trash")
        since = self.modseq()
        self.call(mailboxes.destroy_mailbox, trash, True)
        self.assertEqual(calls, [(self.account, trash, True, True)])
        self.assertFalse(self.call(mailboxes.mailbox_exists, trash))
        changes = self.call(changelog.changes_since, mailboxes.TYPE_NAME, since, 100)
        self.assertEqual(changes.destroyed, [trash])

    def test_destroy_hook_failure_keeps_mailbox(self):
        """
        When a destroy hook raises, the transaction rolls back and the
        Mailbox is still there.
        """

        def hook(txn, account_id, mailbox_id, remove_emails):
            raise RuntimeError("no")

        self.patch(mailboxes, "mailbox_destroy_hooks", [hook])
        trash = self.call(mailboxes.find_by_role, "trash")
        self.assertRaises(RuntimeError, self.call, mailboxes.destroy_mailbox, trash, False)
        self.assertTrue(self.call(mailboxes.mailbox_exists, trash))

    def test_registered_as_account_hook(self):
        """
        Importing the module registers create_default_mailboxes as an
        account creation hook.
        """
        self.assertIn(mailboxes.create_default_mailboxes, accounts.account_created_hooks)

    def test_removed_with_account(self):
        """
        Removing an account removes its Mailboxes.
        """
        self.database.run_sync(accounts.remove_account, "alice", write=True)
        self.assertEqual(self.call(mailboxes.mailbox_ids), set())


# The same tests on PostgreSQL (see tests/pg.py).
pg.add_postgresql_variants(globals(), MailboxStorageTests)
