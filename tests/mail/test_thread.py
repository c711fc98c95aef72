"""
Tests for threading at ingest (RFC 8621 section 3) and for Thread/get and
Thread/changes (L{jmapd.mail.thread}).
"""

from tests import pg
from tests.mail.test_email_support import MailTestCase, message


class ThreadingTests(MailTestCase):
    def test_reply_joins_thread(self):
        """
        A reply whose In-Reply-To names an earlier message with the same
        subject (after "Re:") joins that message's Thread.
        """
        first = self.deliver(message("Lunch", "a@x"))
        reply = self.deliver(message("Re: Lunch", "b@x", in_reply_to="a@x"))
        self.assertEqual(reply.thread_id, first.thread_id)
        self.assertEqual(self.thread_emails(first.thread_id), [first.id, reply.id])

    def test_reference_in_either_direction(self):
        """
        A shared id may appear in any of Message-ID, In-Reply-To and
        References of either message: two replies to the same (absent)
        original share a Thread.
        """
        one = self.deliver(message("Re: Plan", "r1@x", references=["root@x"]))
        two = self.deliver(message("Re: Plan", "r2@x", in_reply_to="root@x"))
        self.assertEqual(one.thread_id, two.thread_id)

    def test_reply_to_unknown_message(self):
        """
        A reply to a message the account does not have starts its own
        Thread.
        """
        first = self.deliver(message("Lunch", "a@x"))
        other = self.deliver(message("Re: Lunch", "b@x", in_reply_to="unknown@x"))
        self.assertNotEqual(other.thread_id, first.thread_id)

    def test_changed_subject_starts_thread(self):
        """
        A reply that shares a message id but changed the subject is a new
        conversation: its own Thread.
        """
        first = self.deliver(message("Lunch", "a@x"))
        reply = self.deliver(message("Re: Something else", "b@x", in_reply_to="a@x"))
        self.assertNotEqual(reply.thread_id, first.thread_id)

    def test_subject_normalisation(self):
        """
        Prefixes (Re:, Fwd:, Fw:, AW:, [list] tags, repeated), white space
        and case do not keep a reply out of its Thread.
        """
        first = self.deliver(message("Team  lunch", "a@x"))
        reply = self.deliver(message("[team] RE: Fwd:  re: team LUNCH ", "b@x", in_reply_to="a@x"))
        self.assertEqual(reply.thread_id, first.thread_id)

    def test_same_subject_without_shared_id(self):
        """
        The same subject alone does not make a Thread.
        """
        first = self.deliver(message("Hello", "a@x"))
        second = self.deliver(message("Hello", "b@x"))
        self.assertNotEqual(first.thread_id, second.thread_id)

    def test_out_of_order_merge(self):
        """
        A reply arrives first, then the original, which starts its own
        Thread (it does not name the reply); the message that references
        both merges the two Threads: the older Thread stays, the Emails of
        the other are destroyed and created again under new ids (threadId
        is immutable), and Email/changes and Thread/changes report it.
        """
        reply = self.deliver(message("Re: Trip", "reply@x", in_reply_to="orig@x"))
        original = self.deliver(message("Trip", "orig@x"))
        # The reply names orig@x, so the original joins the reply's Thread.
        self.assertEqual(original.thread_id, reply.thread_id)
        # A second reply to a message only the original's branch knows.
        lone = self.deliver(message("Re: Trip", "lone@x", in_reply_to="other@x"))
        self.assertNotEqual(lone.thread_id, reply.thread_id)
        email_state = self.state("Email")
        thread_state = self.state("Thread")
        link = self.deliver(message("Re: Trip", "link@x", references=["orig@x", "other@x"]))
        self.assertEqual(link.thread_id, reply.thread_id)
        members = self.thread_emails(reply.thread_id)
        self.assertEqual(len(members), 4)
        self.assertIn(reply.id, members)
        self.assertIn(original.id, members)
        self.assertNotIn(lone.id, members)
        [moved] = [m for m in members if m not in (reply.id, original.id, link.id)]
        self.assertEqual(self.get([lone.id], ["id"]), [])
        self.assertEqual(self.get_one(moved, ["subject", "messageId"])["messageId"], ["lone@x"])
        email_changes = self.changes("Email", email_state)
        self.assertEqual(email_changes["destroyed"], [lone.id])
        self.assertEqual(sorted(email_changes["created"]), sorted([moved, link.id]))
        self.assertEqual(email_changes["updated"], [])
        thread_changes = self.changes("Thread", thread_state)
        self.assertEqual(thread_changes["updated"], [reply.thread_id])
        self.assertEqual(thread_changes["destroyed"], [lone.thread_id])
        [[_, response, _]] = self.calls([["Thread/get", {"accountId": self.alice, "ids": [lone.thread_id]}, "t"]])
        self.assertEqual(response["notFound"], [lone.thread_id])
        self.assertCountsExact()

    def test_merge_keeps_oldest_thread(self):
        """
        When a message links two Threads, the Thread created first keeps
        its id, whichever order the linking message names them in; the
        moved Email keeps its Mailboxes, keywords, blob and receivedAt.
        """
        old = self.deliver(message("Topic", "old@x"))
        young = self.deliver(message("Re: Topic", "young@x", in_reply_to="gone@x"), roles=("inbox", "archive"),
                             keywords=["$flagged", "$seen"])
        before = self.get_one(young.id, ["blobId", "receivedAt", "mailboxIds", "keywords", "size"])
        link = self.deliver(message("Re: Topic", "link@x", references=["young@x", "old@x"]))
        self.assertEqual(link.thread_id, old.thread_id)
        [moved] = [m for m in self.thread_emails(old.thread_id) if m not in (old.id, link.id)]
        after = self.get_one(moved, ["blobId", "receivedAt", "mailboxIds", "keywords", "size"])
        del before["id"], after["id"]
        self.assertEqual(after, before)
        self.assertCountsExact()

    def test_merge_of_three_threads(self):
        """
        A message linking three Threads leaves one Thread with every
        Email.
        """
        a = self.deliver(message("X", "a@x"))
        b = self.deliver(message("X", "b@x"))
        c = self.deliver(message("X", "c@x"), roles=("archive",))
        link = self.deliver(message("Re: X", "d@x", references=["a@x", "b@x", "c@x"]))
        self.assertEqual(link.thread_id, a.thread_id)
        self.assertEqual(len(self.thread_emails(a.thread_id)), 4)
        self.assertEqual(self.count_of("inbox"), (3, 3, 1, 1))
        self.assertEqual(self.count_of("archive"), (1, 1, 1, 1))
        self.assertCountsExact()
        del b, c


class ThreadGetTests(MailTestCase):
    def test_email_ids_sorted_by_received_at_then_id(self):
        """
        emailIds are in receivedAt order, oldest first, and by id when the
        dates are equal.
        """
        late = self.deliver(message("S", "a@x"), received_at=3_000_000)
        early = self.deliver(message("Re: S", "b@x", in_reply_to="a@x"), received_at=1_000_000)
        same1 = self.deliver(message("Re: S", "c@x", in_reply_to="a@x"), received_at=2_000_000)
        same2 = self.deliver(message("Re: S", "d@x", in_reply_to="a@x"), received_at=2_000_000)
        tied = sorted([same1.id, same2.id])
        self.assertEqual(self.thread_emails(late.thread_id), [early.id, *tied, late.id])

    def test_get_all_and_not_found(self):
        """
        Thread/get with ids null lists every Thread; unknown ids are
        notFound.
        """
        a = self.deliver(message("A", "a@x"))
        b = self.deliver(message("B", "b@x"))
        response = self.call("Thread/get", {"ids": None})
        self.assertEqual(
            sorted(response["list"], key=lambda t: t["id"]),
            sorted([{"id": a.thread_id, "emailIds": [a.id]}, {"id": b.thread_id, "emailIds": [b.id]}],
                   key=lambda t: t["id"]),
        )
        response = self.call("Thread/get", {"ids": ["Tnope"], "properties": ["emailIds"]})
        self.assertEqual(response["notFound"], ["Tnope"])

    def test_changes(self):
        """
        Thread/changes reports a new Thread as created, a Thread an Email
        joined or left as updated, and a Thread whose last Email was
        destroyed as destroyed.
        """
        start = self.state("Thread")
        a = self.deliver(message("A", "a@x"))
        changes = self.changes("Thread", start)
        self.assertEqual((changes["created"], changes["updated"], changes["destroyed"]), ([a.thread_id], [], []))
        middle = changes["newState"]
        reply = self.deliver(message("Re: A", "b@x", in_reply_to="a@x"))
        changes = self.changes("Thread", middle)
        self.assertEqual((changes["created"], changes["updated"]), ([], [a.thread_id]))
        middle = changes["newState"]
        self.call("Email/set", {"destroy": [a.id, reply.id]})
        changes = self.changes("Thread", middle)
        self.assertEqual((changes["updated"], changes["destroyed"]), ([], [a.thread_id]))

    def test_keyword_change_does_not_touch_thread(self):
        """
        Changing an Email's keywords changes the Email, not its Thread
        (emailIds are unchanged).
        """
        a = self.deliver(message("A", "a@x"))
        start = self.state("Thread")
        self.call("Email/set", {"update": {a.id: {"keywords/$seen": True}}})
        self.assertEqual(self.state("Thread"), start)


# The same tests on PostgreSQL (see tests/pg.py).
pg.add_postgresql_variants(globals(), ThreadGetTests, ThreadingTests)
