"""
Tests for L{jmapd.storage.emails}: subject normalisation, the unread rule,
the rows ingest writes and the (Mailbox, Thread) counters.
"""

from twisted.trial.unittest import SynchronousTestCase

from jmapd.storage import emails
from tests import pg
from tests.mail.test_email_support import MULTIPART, MailTestCase, message


class SubjectTests(SynchronousTestCase):
    def test_prefixes_stripped(self):
        """
        Reply and forward prefixes in several languages and list tags are
        stripped repeatedly; white space collapses; case is folded.
        """
        for subject in ["Lunch", "Re: Lunch", "RE:lunch", "Fwd: Re: LUNCH", "Fw: lunch", "AW: Lunch",
                        "[list] Re: [other]  Lunch ", "Re[2]: Lunch", "re : lunch", "SV: Lunch", "  lunch\t"]:
            self.assertEqual(emails.normalise_subject(subject), "lunch", subject)

    def test_other_words_kept(self):
        """
        Words that only start like a prefix, and text inside the subject,
        are kept.
        """
        self.assertEqual(emails.normalise_subject("Reply needed: Re: x"), "reply needed: re: x")
        self.assertEqual(emails.normalise_subject("Lunch [Re: x]"), "lunch [re: x]")
        self.assertEqual(emails.normalise_subject(None), "")


class UnreadTests(SynchronousTestCase):
    def test_unread(self):
        """
        An Email is unread unless it has $seen or $draft.
        """
        self.assertTrue(emails.is_unread([]))
        self.assertTrue(emails.is_unread(["$flagged", "$answered"]))
        self.assertFalse(emails.is_unread(["$seen"]))
        self.assertFalse(emails.is_unread(["$draft"]))


class IngestTests(MailTestCase):
    def rows(self, sql, *args):
        return self.run_sync(lambda txn: txn.fetchall(sql, args), write=False)

    def test_columns(self):
        """
        Ingest stores the parse in columns: ids, sizes, dates, subject and
        its normalised form, flags and the message ids index.
        """
        created = self.deliver(MULTIPART, received_at=5_000)
        [row] = self.run_sync(lambda txn: emails.get_rows(txn, self.alice, [created.id], emails.COLUMNS),
                              write=False)
        self.assertEqual(row["thread_id"], created.thread_id)
        self.assertEqual(row["size"], len(MULTIPART))
        self.assertEqual(row["received_at"], 5_000)
        self.assertEqual(row["sent_at"], "2023-10-03T08:30:00Z")
        self.assertEqual(row["sent_at_ms"], 1_696_321_800_000)
        self.assertEqual((row["subject"], row["thread_subject"]), ("Café plans", "café plans"))
        self.assertEqual((row["has_attachment"], row["unread"]), (1, 1))
        self.assertTrue(created.id.startswith("M") and created.thread_id.startswith("T"))
        self.assertEqual(
            self.rows("SELECT msgid FROM email_message_ids WHERE email_id = ?", created.id), [("multi@example.com",)]
        )

    def test_bytes_deleted_meanwhile_put_back(self):
        """
        When housekeeping deletes the same bytes (an expired upload of
        them) between ingest's put and its row, ingest puts them back: the
        new Email's blob is readable.
        """
        store = self.env.blobs
        put = store.put

        def put_then_lose(data):
            blob_id = put(data)
            store.delete(blob_id)
            self.patch(store, "put", put)
            return blob_id

        self.patch(store, "put", put_then_lose)
        created = self.deliver(message("Vanishing", "v@x"))
        self.assertEqual(store.read(created.blob_id)[:5], message("Vanishing", "v@x")[:5])

    def test_ids_never_reused(self):
        """
        The same message delivered twice gets two different Email ids in
        one Thread.
        """
        one = self.deliver(message("Same", "s@x"))
        two = self.deliver(message("Same", "s@x"))
        self.assertNotEqual(one.id, two.id)
        self.assertEqual(one.thread_id, two.thread_id)

    def test_counter_rows(self):
        """
        mailbox_threads holds one row per (Mailbox, Thread) with Emails,
        counting Emails and unread ones; rows at zero are deleted.
        """
        a = self.deliver(message("S", "a@x"))
        b = self.deliver(message("Re: S", "b@x", in_reply_to="a@x"), keywords=["$seen"])
        inbox = self.mailbox("inbox")
        self.assertEqual(
            self.rows("SELECT mailbox_id, thread_id, emails, unread FROM mailbox_threads"),
            [(inbox, a.thread_id, 2, 1)],
        )
        self.run_sync(emails.destroy_email, self.alice, a.id, 0.0, 10.0)
        self.run_sync(emails.destroy_email, self.alice, b.id, 0.0, 10.0)
        self.assertEqual(self.rows("SELECT * FROM mailbox_threads"), [])
        self.assertEqual(self.rows("SELECT * FROM threads"), [])
        self.assertEqual(self.count_of("inbox"), (0, 0, 0, 0))

    def test_counts_follow_keywords_and_moves(self):
        """
        Reading and unreading an Email in two Mailboxes moves the unread
        counts of both (Emails and Threads) and nothing else; moving it
        from one Mailbox to another moves its counts with it; the
        (Mailbox, Thread) rows say the same.
        """
        archive = self.new_mailbox("Archive")
        other = self.new_mailbox("Other")
        a = self.deliver(message("S", "a@x"), roles=(), mailbox_ids=[archive])
        b = self.deliver(message("Re: S", "b@x", in_reply_to="a@x"), roles=(), mailbox_ids=[archive], keywords=["$seen"])
        inbox = self.mailbox("inbox")
        self.run_sync(emails.update_email, self.alice, a.id, [inbox, archive], None)
        counts = self.counts()
        self.assertEqual((counts[inbox], counts[archive]), ((1, 1, 1, 1), (2, 1, 1, 1)))
        self.run_sync(emails.update_email, self.alice, a.id, None, ["$seen"])
        counts = self.counts()
        self.assertEqual((counts[inbox], counts[archive]), ((1, 0, 1, 0), (2, 0, 1, 0)))
        self.run_sync(emails.update_email, self.alice, a.id, None, [])
        counts = self.counts()
        self.assertEqual((counts[inbox], counts[archive]), ((1, 1, 1, 1), (2, 1, 1, 1)))
        self.run_sync(emails.update_email, self.alice, a.id, [other, archive], ["$flagged"])
        counts = self.counts()
        self.assertEqual((counts[inbox], counts[archive], counts[other]), ((0, 0, 0, 0), (2, 1, 1, 1), (1, 1, 1, 1)))
        self.assertEqual(
            sorted(self.rows("SELECT mailbox_id, thread_id, emails, unread FROM mailbox_threads")),
            sorted([(archive, a.thread_id, 2, 1), (other, a.thread_id, 1, 1)]),
        )
        self.assertEqual(b.thread_id, a.thread_id)

    def test_update_reports_change(self):
        """
        update_email says whether anything changed, and raises KeyError
        for an unknown Email.
        """
        a = self.deliver(message("S", "a@x"))
        self.assertTrue(self.run_sync(emails.update_email, self.alice, a.id, None, ["$seen"]))
        self.assertFalse(self.run_sync(emails.update_email, self.alice, a.id, None, ["$seen"]))
        self.assertRaises(KeyError, self.run_sync, emails.update_email, self.alice, "Mnope", None, [])

    def test_email_delivery_state(self):
        """
        A new Email changes the EmailDelivery state; a keyword change does
        not.
        """
        from jmapd.storage import changelog

        def delivery():
            return self.run_sync(changelog.get_modseq, self.alice, "EmailDelivery", write=False)

        a = self.deliver(message("S", "a@x"))
        after_delivery = delivery()
        self.assertGreater(after_delivery, 0)
        self.run_sync(emails.update_email, self.alice, a.id, None, ["$seen"])
        self.assertEqual(delivery(), after_delivery)


# The same tests on PostgreSQL (see tests/pg.py).
pg.add_postgresql_variants(globals(), IngestTests)
