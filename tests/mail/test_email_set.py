"""
Tests for Email/set update and destroy (RFC 8621 section 4.6) in
L{jmapd.mail.email}, with the Mailbox counts after every kind of change.
"""

from jmapd.storage import blobs as blob_storage
from tests import pg
from tests.mail.test_email_support import MailTestCase, message


class EmailUpdateTests(MailTestCase):
    config = {"mail_max_keywords_per_email": 3, "mail_max_mailboxes_per_email": 2}

    def setUp(self):
        super().setUp()
        self.email = self.deliver(message("Hi", "a@x"), keywords=["$flagged"])

    def update(self, patch, email_id=None):
        email_id = email_id or self.email.id
        response = self.call("Email/set", {"update": {email_id: patch}})
        return response

    def updated_or_error(self, patch):
        response = self.update(patch)
        if response["notUpdated"]:
            return response["notUpdated"][self.email.id]
        self.assertEqual(response["updated"], {self.email.id: None})
        return None

    def test_keyword_patch(self):
        """
        keywords/<k> true adds and null removes a keyword, matched case
        insensitively and stored lower case; the unread counts follow.
        """
        self.assertEqual(self.count_of("inbox"), (1, 1, 1, 1))
        self.assertIsNone(self.updated_or_error({"keywords/$Seen": True}))
        self.assertEqual(self.get_one(self.email.id, ["keywords"])["keywords"], {"$flagged": True, "$seen": True})
        self.assertEqual(self.count_of("inbox"), (1, 0, 1, 0))
        self.assertIsNone(self.updated_or_error({"keywords/$SEEN": None, "keywords/$FLAGGED": None}))
        self.assertEqual(self.get_one(self.email.id, ["keywords"])["keywords"], {})
        self.assertEqual(self.count_of("inbox"), (1, 1, 1, 1))
        self.assertCountsExact()

    def test_draft_is_not_unread(self):
        """
        An Email with $draft (and no $seen) is not unread.
        """
        self.assertIsNone(self.updated_or_error({"keywords/$draft": True}))
        self.assertEqual(self.count_of("inbox"), (1, 0, 1, 0))
        self.assertCountsExact()

    def test_whole_keywords(self):
        """
        Setting keywords replaces the whole set.
        """
        self.assertIsNone(self.updated_or_error({"keywords": {"Work": True, "$seen": True}}))
        self.assertEqual(self.get_one(self.email.id, ["keywords"])["keywords"], {"work": True, "$seen": True})
        self.assertCountsExact()

    def test_move(self):
        """
        A mailboxIds patch moves an Email; both Mailboxes' counts change,
        and Email/changes reports an update.
        """
        state = self.state("Email")
        mailbox_state = self.state("Mailbox")
        inbox, trash = self.mailbox("inbox"), self.mailbox("trash")
        self.assertIsNone(self.updated_or_error({f"mailboxIds/{inbox}": None, f"mailboxIds/{trash}": True}))
        self.assertEqual(self.get_one(self.email.id, ["mailboxIds"])["mailboxIds"], {trash: True})
        self.assertEqual(self.count_of("inbox"), (0, 0, 0, 0))
        self.assertEqual(self.count_of("trash"), (1, 1, 1, 1))
        self.assertEqual(self.changes("Email", state)["updated"], [self.email.id])
        mailbox_changes = self.changes("Mailbox", mailbox_state)
        self.assertEqual(sorted(mailbox_changes["updated"]), sorted([inbox, trash]))
        self.assertCountsExact()

    def test_whole_mailbox_ids_and_creation_reference(self):
        """
        mailboxIds may be replaced whole, and may name a Mailbox created
        earlier in the same request by "#creationId".
        """
        responses = self.calls([
            ["Mailbox/set", {"accountId": self.alice, "create": {"new": {"name": "Projects"}}}, "m"],
            ["Email/set", {"accountId": self.alice, "update": {self.email.id: {"mailboxIds": {"#new": True}}}}, "e"],
        ])
        created = responses[0][1]["created"]["new"]["id"]
        self.assertEqual(responses[1][1]["updated"], {self.email.id: None})
        self.assertEqual(self.get_one(self.email.id, ["mailboxIds"])["mailboxIds"], {created: True})
        self.assertEqual(self.counts()[created], (1, 1, 1, 1))
        self.assertCountsExact()

    def test_threads_counted_once(self):
        """
        Two Emails of one Thread in a Mailbox count as one Thread; the
        Thread is unread while either is.
        """
        reply = self.deliver(message("Re: Hi", "b@x", in_reply_to="a@x"))
        self.assertEqual(self.count_of("inbox"), (2, 2, 1, 1))
        self.update({"keywords/$seen": True})
        self.assertEqual(self.count_of("inbox"), (2, 1, 1, 1))
        self.update({"keywords/$seen": True}, reply.id)
        self.assertEqual(self.count_of("inbox"), (2, 0, 1, 0))
        self.assertCountsExact()

    def test_no_change(self):
        """
        A patch that changes nothing is a success and records no change.
        """
        state = self.state("Email")
        self.assertIsNone(self.updated_or_error({"keywords/$flagged": True}))
        self.assertEqual(self.changes("Email", state)["updated"], [])

    def test_immutable_properties(self):
        """
        Any property other than keywords and mailboxIds cannot change:
        invalidProperties naming it.
        """
        for patch, name in [
            ({"subject": "Other"}, "subject"),
            ({"receivedAt": "2020-01-01T00:00:00Z"}, "receivedAt"),
            ({"threadId": "T1"}, "threadId"),
            ({"header:X-Foo": " bar"}, "header:X-Foo"),
            ({"bodyStructure/type": "text/html"}, "bodyStructure"),
        ]:
            error = self.updated_or_error(patch)
            self.assertEqual((error["type"], error["properties"]), ("invalidProperties", [name]), patch)

    def test_invalid_keywords(self):
        """
        Keywords outside the IMAP syntax, or values other than true, are
        invalidProperties on keywords.
        """
        for patch in [
            {"keywords/a b": True},
            {"keywords/a(b": True},
            {"keywords/$seen": False},
            {"keywords": {"x": False}},
            {"keywords": {"x]": True}},
            {"keywords": {"é": True}},
            {"keywords": {"x" * 256: True}},
            {"keywords": ["$seen"]},
        ]:
            error = self.updated_or_error(patch)
            self.assertEqual((error["type"], error["properties"]), ("invalidProperties", ["keywords"]), patch)

    def test_too_many_keywords(self):
        """
        More keywords than mail-max-keywords-per-email is tooManyKeywords.
        """
        error = self.updated_or_error({"keywords": {"a": True, "b": True, "c": True, "d": True}})
        self.assertEqual(error["type"], "tooManyKeywords")
        self.assertIsNone(self.updated_or_error({"keywords/a": True, "keywords/b": True}))
        error = self.updated_or_error({"keywords/c": True})
        self.assertEqual(error["type"], "tooManyKeywords")

    def test_invalid_mailbox_ids(self):
        """
        No Mailbox at all, an unknown Mailbox, an unresolved creation id,
        or a value other than true is invalidProperties on mailboxIds.
        """
        inbox = self.mailbox("inbox")
        for patch in [
            {"mailboxIds": {}},
            {f"mailboxIds/{inbox}": None},
            {"mailboxIds/mNope": True},
            {"mailboxIds/#nothing": True},
            {f"mailboxIds/{inbox}": False},
            {"mailboxIds": {"mNope": True}},
            {"mailboxIds": None},
        ]:
            error = self.updated_or_error(patch)
            self.assertEqual((error["type"], error["properties"]), ("invalidProperties", ["mailboxIds"]), patch)
        self.assertCountsExact()

    def test_too_many_mailboxes(self):
        """
        More Mailboxes than mail-max-mailboxes-per-email is
        tooManyMailboxes.
        """
        error = self.updated_or_error(
            {f"mailboxIds/{self.mailbox('archive')}": True, f"mailboxIds/{self.mailbox('trash')}": True}
        )
        self.assertEqual(error["type"], "tooManyMailboxes")
        self.assertCountsExact()

    def test_not_found(self):
        """
        Updating an Email that does not exist is notFound.
        """
        response = self.call("Email/set", {"update": {"Mnope": {"keywords/$seen": True}}})
        self.assertEqual(response["notUpdated"]["Mnope"]["type"], "notFound")


class EmailDestroyTests(MailTestCase):
    def test_destroy(self):
        """
        Destroying an Email takes it out of its Mailboxes and Thread (the
        Thread stays while it has other Emails), with changes recorded.
        """
        first = self.deliver(message("Hi", "a@x"), roles=("inbox", "archive"))
        reply = self.deliver(message("Re: Hi", "b@x", in_reply_to="a@x"), keywords=["$seen"])
        email_state, thread_state = self.state("Email"), self.state("Thread")
        response = self.call("Email/set", {"destroy": [first.id]})
        self.assertEqual(response["destroyed"], [first.id])
        self.assertEqual(self.get([first.id], ["id"]), [])
        self.assertEqual(self.thread_emails(first.thread_id), [reply.id])
        self.assertEqual(self.count_of("inbox"), (1, 0, 1, 0))
        self.assertEqual(self.count_of("archive"), (0, 0, 0, 0))
        self.assertEqual(self.changes("Email", email_state)["destroyed"], [first.id])
        self.assertEqual(self.changes("Thread", thread_state)["updated"], [first.thread_id])
        self.assertCountsExact()

    def test_destroy_not_found(self):
        """
        Destroying an unknown Email is notFound.
        """
        response = self.call("Email/set", {"destroy": ["Mnope"]})
        self.assertEqual(response["notDestroyed"]["Mnope"]["type"], "notFound")

    def test_blob_becomes_temporary(self):
        """
        The account keeps its message blob while an Email uses it; when the
        last such Email is destroyed the access becomes temporary (it
        expires after blob-temp-ttl), and the file is not deleted then.
        """
        raw = message("Hi", "a@x")
        one = self.deliver(raw)
        two = self.deliver(raw)
        self.assertEqual(one.blob_id, two.blob_id)
        self.assertNotEqual(one.id, two.id)

        def record():
            return self.run_sync(blob_storage.get_blob, self.alice, one.blob_id, write=False)

        self.call("Email/set", {"destroy": [one.id]})
        self.assertIsNone(record().expires_at)
        self.call("Email/set", {"destroy": [two.id]})
        self.assertEqual(record().expires_at, self.env.clock.seconds() + self.env.config.blob_temp_ttl)
        self.assertTrue(self.env.blobs.exists(one.blob_id))


class MailboxDestroyTests(MailTestCase):
    def test_on_destroy_remove_emails(self):
        """
        Mailbox/set destroy with onDestroyRemoveEmails destroys the Emails
        only in that Mailbox and takes it out of the others; the other
        Mailboxes' counts stay exact.
        """
        folder = self.new_mailbox("Folder")
        only = self.deliver(message("Only", "o@x"), roles=(), mailbox_ids=[folder])
        both = self.deliver(message("Both", "b@x"), roles=("inbox",), mailbox_ids=[folder])
        reply = self.deliver(message("Re: Only", "r@x", in_reply_to="o@x"))
        email_state = self.state("Email")
        response = self.call("Mailbox/set", {"destroy": [folder], "onDestroyRemoveEmails": True})
        self.assertEqual(response["destroyed"], [folder])
        self.assertEqual(self.get([only.id], ["id"]), [])
        self.assertEqual(self.get_one(both.id, ["mailboxIds"])["mailboxIds"], {self.mailbox("inbox"): True})
        self.assertEqual(self.thread_emails(only.thread_id), [reply.id])
        changes = self.changes("Email", email_state)
        self.assertEqual(changes["destroyed"], [only.id])
        self.assertEqual(changes["updated"], [both.id])
        self.assertEqual(self.count_of("inbox"), (2, 2, 2, 2))
        self.assertCountsExact()

    def test_mailbox_with_emails_not_destroyed(self):
        """
        Without onDestroyRemoveEmails a Mailbox with Emails stays, and so
        do its Emails.
        """
        folder = self.new_mailbox("Folder")
        kept = self.deliver(message("Only", "o@x"), roles=(), mailbox_ids=[folder])
        response = self.call("Mailbox/set", {"destroy": [folder]})
        self.assertEqual(response["notDestroyed"][folder]["type"], "mailboxHasEmail")
        self.assertEqual(self.get_one(kept.id, ["mailboxIds"])["mailboxIds"], {folder: True})
        self.assertCountsExact()


# The same tests on PostgreSQL (see tests/pg.py).
pg.add_postgresql_variants(globals(), EmailDestroyTests, EmailUpdateTests, MailboxDestroyTests)
