"""
Tests for Email/import (RFC 8621 section 4.8), Email/parse (4.9),
Email/copy (4.7) and Email/changes in L{jmapd.mail.email}, and for
L{resolve_blob}, the blob ids of body parts.
"""

from jmapd.mail.email import PARSE_DEFAULT_PROPERTIES, resolve_blob
from jmapd.mail.mailbox import RIGHTS
from jmapd.storage import mailboxes
from tests import pg
from tests.mail.test_email_support import MULTIPART, MailTestCase, message

RECEIVED = (
    b"Received: from mx.example.com by mail.example.org; Tue, 03 Oct 2023 10:15:30 +0200\r\n"
    b"Received: from a by b; Tue, 03 Oct 2023 09:00:00 +0200\r\n"
)


class EmailImportTests(MailTestCase):
    config = {"mail_import_max_items": 3}

    def import_(self, emails, **extra):
        return self.call("Email/import", {"emails": emails, **extra})

    def test_import(self):
        """
        An uploaded message becomes an Email with the given Mailboxes,
        keywords and receivedAt; created has id, blobId, threadId and
        size; the blob becomes permanent for the account.
        """
        raw = message("Imported", "i@x")
        blob_id = self.upload(raw)
        inbox = self.mailbox("inbox")
        old = self.state("Email")
        response = self.import_(
            {"k1": {"blobId": blob_id, "mailboxIds": {inbox: True}, "keywords": {"$Seen": True},
                    "receivedAt": "2023-01-02T03:04:05Z"}}
        )
        created = response["created"]["k1"]
        self.assertEqual(sorted(created), ["blobId", "id", "size", "threadId"])
        self.assertEqual((created["blobId"], created["size"]), (blob_id, len(raw)))
        self.assertEqual(response["oldState"], old)
        self.assertNotEqual(response["newState"], old)
        self.assertIsNone(response["notCreated"])
        found = self.get_one(created["id"], ["mailboxIds", "keywords", "receivedAt", "subject", "threadId"])
        self.assertEqual(found["keywords"], {"$seen": True})
        self.assertEqual(found["receivedAt"], "2023-01-02T03:04:05Z")
        self.assertEqual(found["threadId"], created["threadId"])
        self.assertEqual(self.count_of("inbox"), (1, 0, 1, 0))
        self.assertEqual(self.changes("Email", old)["created"], [created["id"]])
        from jmapd.storage import blobs as blob_storage

        record = self.run_sync(blob_storage.get_blob, self.alice, blob_id, write=False)
        self.assertIsNone(record.expires_at)
        self.assertCountsExact()

    def test_received_at_defaults(self):
        """
        Without receivedAt, the time of the most recent (topmost) Received
        header is used, else the time of the import.
        """
        with_received = self.upload(RECEIVED + message("R", "r@x"))
        without = self.upload(message("N", "n@x"))
        inbox = {self.mailbox("inbox"): True}
        response = self.import_({"a": {"blobId": with_received, "mailboxIds": inbox},
                                 "b": {"blobId": without, "mailboxIds": inbox}})
        a = self.get_one(response["created"]["a"]["id"], ["receivedAt"])
        b = self.get_one(response["created"]["b"]["id"], ["receivedAt"])
        self.assertEqual(a["receivedAt"], "2023-10-03T08:15:30Z")
        self.assertEqual(b["receivedAt"], "2023-11-14T22:13:20Z")

    def test_duplicates_allowed(self):
        """
        Importing the same message twice makes two Emails (no
        alreadyExists), each with its own id.
        """
        blob_id = self.upload(message("Dup", "d@x"))
        inbox = {self.mailbox("inbox"): True}
        response = self.import_({"a": {"blobId": blob_id, "mailboxIds": inbox},
                                 "b": {"blobId": blob_id, "mailboxIds": inbox}})
        self.assertNotEqual(response["created"]["a"]["id"], response["created"]["b"]["id"])
        self.assertEqual(response["created"]["a"]["threadId"], response["created"]["b"]["threadId"])
        self.assertEqual(self.count_of("inbox"), (2, 2, 1, 1))

    def test_errors(self):
        """
        An unknown or foreign blob, missing or unknown Mailboxes, bad
        keywords, unknown properties are invalidProperties naming the
        property; a blob that is not a message is invalidEmail.
        """
        self.add_account("bob")
        foreign = self.upload(message("Bob's", "b@x"), who="bob")
        good = self.upload(message("Fine", "f@x"))
        junk = self.upload(b"\x00\x01 this is not a message at all")
        inbox = {self.mailbox("inbox"): True}
        cases = {
            "unknown": ({"blobId": "bnope", "mailboxIds": inbox}, "invalidProperties", ["blobId"]),
            "foreign": ({"blobId": foreign, "mailboxIds": inbox}, "invalidProperties", ["blobId"]),
            "noblob": ({"mailboxIds": inbox}, "invalidProperties", ["blobId"]),
            "nomailbox": ({"blobId": good}, "invalidProperties", ["mailboxIds"]),
            "empty": ({"blobId": good, "mailboxIds": {}}, "invalidProperties", ["mailboxIds"]),
            "badmailbox": ({"blobId": good, "mailboxIds": {"mNope": True}}, "invalidProperties", ["mailboxIds"]),
            "keywords": ({"blobId": good, "mailboxIds": inbox, "keywords": {"a b": True}},
                         "invalidProperties", ["keywords"]),
            "extra": ({"blobId": good, "mailboxIds": inbox, "subject": "x"}, "invalidProperties", ["subject"]),
            "date": ({"blobId": good, "mailboxIds": inbox, "receivedAt": "yesterday"},
                     "invalidProperties", ["receivedAt"]),
            "junk": ({"blobId": junk, "mailboxIds": inbox}, "invalidEmail", None),
        }
        for start in range(0, len(cases), 3):
            chunk = dict(list(cases.items())[start : start + 3])
            response = self.import_({name: case[0] for name, case in chunk.items()})
            self.assertIsNone(response["created"])
            for name, (_, kind, properties) in chunk.items():
                error = response["notCreated"][name]
                self.assertEqual(error["type"], kind, name)
                self.assertEqual(error.get("properties"), properties, name)
        self.assertCountsExact()

    def test_too_large(self):
        """
        A message over mail-max-size is tooLarge.
        """
        blob_id = self.upload(message("Big", "big@x", body="x" * 2000))
        from jmapd.config import default_config

        self.env.config = default_config(db_path=self.env.config.db_path, mail_max_size=1000)
        response = self.import_({"a": {"blobId": blob_id, "mailboxIds": {self.mailbox("inbox"): True}}})
        self.assertEqual(response["notCreated"]["a"]["type"], "tooLarge")

    def test_limits_and_state(self):
        """
        More items than mail-import-max-items is requestTooLarge; a wrong
        ifInState is stateMismatch; nothing is imported then.
        """
        blob_id = self.upload(message("X", "x@x"))
        item = {"blobId": blob_id, "mailboxIds": {self.mailbox("inbox"): True}}
        error = self.call_error("Email/import", {"emails": {str(i): item for i in range(4)}})
        self.assertEqual(error["type"], "requestTooLarge")
        error = self.call_error("Email/import", {"emails": {"a": item}, "ifInState": "999"})
        self.assertEqual(error["type"], "stateMismatch")
        response = self.import_({"a": item}, ifInState=self.state("Email"))
        self.assertIsNotNone(response["created"])
        self.assertEqual(self.count_of("inbox"), (1, 1, 1, 1))

    def test_creation_reference(self):
        """
        An imported Email's creation id can be used by a later call.
        """
        blob_id = self.upload(message("X", "x@x"))
        responses = self.calls([
            ["Email/import", {"accountId": self.alice, "emails": {
                "k": {"blobId": blob_id, "mailboxIds": {self.mailbox("inbox"): True}}}}, "i"],
            ["Email/get", {"accountId": self.alice, "ids": ["#k"], "properties": ["subject"]}, "g"],
        ])
        self.assertEqual(responses[1][1]["list"][0]["subject"], "X")

    def test_import_attached_message(self):
        """
        The blob of an attached message (a part blob id) can be imported:
        the part's octets become a blob of their own.
        """
        outer = self.deliver(MULTIPART)
        part_blob = f"{outer.blob_id}_3"
        response = self.import_({"a": {"blobId": part_blob, "mailboxIds": {self.mailbox("archive"): True}}})
        created = response["created"]["a"]
        self.assertNotEqual(created["blobId"], part_blob)
        self.assertEqual(self.get_one(created["id"], ["subject"])["subject"], "Inner message")
        self.assertTrue(self.env.blobs.read(created["blobId"]).startswith(b"From: inner@example.com"))


class EmailParseTests(MailTestCase):
    config = {"mail_parse_max_items": 3}

    def test_parse_upload(self):
        """
        Email/parse of an uploaded message gives the default properties of
        RFC 8621 section 4.9 without storing an Email.
        """
        blob_id = self.upload(MULTIPART)
        response = self.call("Email/parse", {"blobIds": [blob_id], "fetchTextBodyValues": True})
        parsed = response["parsed"][blob_id]
        self.assertEqual(sorted(parsed), sorted(PARSE_DEFAULT_PROPERTIES))
        self.assertEqual(parsed["subject"], "Café plans")
        self.assertEqual(parsed["bodyValues"]["1.1"]["value"], "Café at noon?")
        self.assertEqual(parsed["attachments"][0]["blobId"], f"{blob_id}_2")
        self.assertIsNone(response["notFound"])
        self.assertIsNone(response["notParsable"])
        self.assertEqual(self.call("Email/get", {"ids": None})["list"], [])

    def test_metadata_null(self):
        """
        id, mailboxIds, keywords, receivedAt and threadId are null in a
        parsed Email; blobId and size describe the blob; header forms
        work.
        """
        blob_id = self.upload(MULTIPART)
        response = self.call("Email/parse", {
            "blobIds": [blob_id],
            "properties": ["id", "mailboxIds", "keywords", "receivedAt", "threadId", "blobId", "size",
                           "header:X-Custom:all", "bodyStructure"],
            "bodyProperties": ["partId", "type"],
        })
        parsed = response["parsed"][blob_id]
        self.assertEqual(
            {k: parsed[k] for k in ["id", "mailboxIds", "keywords", "receivedAt", "threadId", "blobId", "size"]},
            {"id": None, "mailboxIds": None, "keywords": None, "receivedAt": None, "threadId": None,
             "blobId": blob_id, "size": len(MULTIPART)},
        )
        self.assertEqual(parsed["header:X-Custom:all"], [" one", " two"])
        self.assertEqual(parsed["bodyStructure"], {"partId": None, "type": "multipart/mixed"})

    def test_parse_attached_message(self):
        """
        The part blob of an attached message/rfc822 parses as that
        message, and its own parts have blob ids that resolve.
        """
        outer = self.deliver(MULTIPART)
        part_blob = f"{outer.blob_id}_3"
        response = self.call("Email/parse", {"blobIds": [part_blob], "properties": ["subject", "textBody",
                                                                                       "messageId"]})
        parsed = response["parsed"][part_blob]
        self.assertEqual(parsed["subject"], "Inner message")
        self.assertEqual(parsed["messageId"], ["inner@example.com"])
        inner_text = parsed["textBody"][0]["blobId"]
        self.assertEqual(inner_text, f"{part_blob}_1")
        data = self.run_sync(lambda txn: resolve_blob(txn, self.env, self.alice, inner_text), write=False)
        self.assertEqual(data, b"Inside.")

    def test_not_found_and_not_parsable(self):
        """
        Unknown, foreign and malformed part blob ids are notFound; a blob
        that is not a message is notParsable.
        """
        self.add_account("bob")
        foreign = self.upload(MULTIPART, who="bob")
        junk = self.upload(b"\x00\x01\x02")
        response = self.call("Email/parse", {"blobIds": ["bnope", foreign, junk]})
        self.assertEqual(response["notFound"], ["bnope", foreign])
        self.assertEqual(response["notParsable"], [junk])
        self.assertIsNone(response["parsed"])
        outer = self.deliver(MULTIPART)
        response = self.call("Email/parse", {"blobIds": [f"{outer.blob_id}_9", f"{outer.blob_id}_"]})
        self.assertEqual(response["notFound"], [f"{outer.blob_id}_9", f"{outer.blob_id}_"])

    def test_errors(self):
        """
        More blobs than mail-parse-max-items is requestTooLarge; a
        forbidden header form is invalidArguments.
        """
        error = self.call_error("Email/parse", {"blobIds": ["b1", "b2", "b3", "b4"]})
        self.assertEqual(error["type"], "requestTooLarge")
        error = self.call_error("Email/parse", {"blobIds": ["b1"], "properties": ["header:From:asDate"]})
        self.assertEqual(error["type"], "invalidArguments")


class ResolveBlobTests(MailTestCase):
    def resolve(self, blob_id, who="alice"):
        account_id = self.principals[who].account_id
        return self.run_sync(lambda txn: resolve_blob(txn, self.env, account_id, blob_id), write=False)

    def test_parts(self):
        """
        A part blob id gives the part's transfer-decoded octets; the
        message blob id gives the message; a multipart or unknown part,
        or another account, gives None.
        """
        email = self.deliver(MULTIPART)
        self.assertEqual(self.resolve(email.blob_id), MULTIPART)
        self.assertEqual(self.resolve(f"{email.blob_id}_1-1"), "Café at noon?".encode())
        self.assertEqual(self.resolve(f"{email.blob_id}_2"), b"%PDF-1.4\n")
        self.assertIsNone(self.resolve(f"{email.blob_id}_1"))
        self.assertIsNone(self.resolve(f"{email.blob_id}_7"))
        self.assertIsNone(self.resolve("not an id"))
        self.add_account("bob")
        self.assertIsNone(self.resolve(f"{email.blob_id}_2", who="bob"))


class EmailCopyTests(MailTestCase):
    def setUp(self):
        super().setUp()
        self.bob = self.add_account("bob")
        self.shares["alice"] = ["bob"]
        # Bob shares every Mailbox with alice with every right.
        for box in self.run_sync(mailboxes.get_mailboxes, self.bob):
            self.run_sync(mailboxes.set_share_with, self.bob, box.id, {self.alice: set(RIGHTS)})

    def test_copy(self):
        """
        Email/copy makes a new Email in the target account with the same
        message, and the Mailboxes, keywords and receivedAt given (or the
        original's keywords and receivedAt); the target account may read
        the blob; threading happens in the target.
        """
        source = self.deliver(MULTIPART, who="bob", keywords=["$seen"], received_at=1_000_000)
        self.deliver(message("Re: Café plans", "r@x", in_reply_to="multi@example.com"))
        [[name, response, _]] = self.calls([["Email/copy", {
            "fromAccountId": self.bob, "accountId": self.alice,
            "create": {"c": {"id": source.id, "mailboxIds": {self.mailbox("archive"): True}}},
        }, "1"]])
        self.assertEqual(name, "Email/copy", response)
        created = response["created"]["c"]
        self.assertEqual(created["blobId"], source.blob_id)
        copied = self.get_one(created["id"], ["keywords", "receivedAt", "mailboxIds", "subject", "threadId"])
        self.assertEqual(copied["keywords"], {"$seen": True})
        self.assertEqual(copied["receivedAt"], "1970-01-01T00:16:40Z")
        self.assertEqual(copied["subject"], "Café plans")
        self.assertEqual(len(self.thread_emails(copied["threadId"])), 2)
        self.assertEqual(self.count_of("archive"), (1, 0, 1, 0))
        self.assertCountsExact()
        self.assertCountsExact("bob")

    def test_copy_overrides_and_destroy_original(self):
        """
        keywords and receivedAt may be overridden; onSuccessDestroyOriginal
        destroys the original with an implicit Email/set.
        """
        source = self.deliver(message("Move me", "m@x"), who="bob")
        responses = self.calls([["Email/copy", {
            "fromAccountId": self.bob, "accountId": self.alice,
            "create": {"c": {"id": source.id, "mailboxIds": {self.mailbox("inbox"): True},
                             "keywords": {"$Flagged": True}, "receivedAt": "2020-02-02T02:02:02Z"}},
            "onSuccessDestroyOriginal": True,
        }, "1"]])
        self.assertEqual([r[0] for r in responses], ["Email/copy", "Email/set"])
        self.assertEqual(responses[1][1]["destroyed"], [source.id])
        created = responses[0][1]["created"]["c"]
        copied = self.get_one(created["id"], ["keywords", "receivedAt"])
        self.assertEqual(copied, {"id": created["id"], "keywords": {"$flagged": True},
                                  "receivedAt": "2020-02-02T02:02:02Z"})
        self.assertEqual(self.count_of("inbox", "bob"), (0, 0, 0, 0))
        self.assertCountsExact("bob")

    def test_copy_errors(self):
        """
        Only mailboxIds, keywords and receivedAt may be given; the
        Mailboxes must be the target's; an unknown original is notFound.
        """
        source = self.deliver(message("X", "x@x"), who="bob")
        inbox = {self.mailbox("inbox"): True}
        [[_, response, _]] = self.calls([["Email/copy", {
            "fromAccountId": self.bob, "accountId": self.alice,
            "create": {
                "subject": {"id": source.id, "mailboxIds": inbox, "subject": "changed"},
                "theirs": {"id": source.id},
                "missing": {"id": "Mnope", "mailboxIds": inbox},
                "server": {"id": source.id, "mailboxIds": inbox, "threadId": "T1"},
            },
        }, "1"]])
        errors = response["notCreated"]
        self.assertEqual((errors["subject"]["type"], errors["subject"]["properties"]),
                         ("invalidProperties", ["subject"]))
        self.assertEqual((errors["theirs"]["type"], errors["theirs"]["properties"]),
                         ("invalidProperties", ["mailboxIds"]))
        self.assertEqual(errors["missing"]["type"], "notFound")
        self.assertEqual(errors["server"]["type"], "invalidProperties")
        self.assertIsNone(response["created"])


class EmailChangesTests(MailTestCase):
    def test_changes(self):
        """
        Email/changes reports created, updated and destroyed Emails since a
        state, and maxChanges pages through them.
        """
        start = self.state("Email")
        a = self.deliver(message("A", "a@x"))
        b = self.deliver(message("B", "b@x"))
        changes = self.changes("Email", start)
        self.assertEqual(sorted(changes["created"]), sorted([a.id, b.id]))
        middle = changes["newState"]
        self.call("Email/set", {"update": {a.id: {"keywords/$seen": True}}, "destroy": [b.id]})
        changes = self.changes("Email", middle)
        self.assertEqual((changes["created"], changes["updated"], changes["destroyed"]), ([], [a.id], [b.id]))
        page = self.call("Email/changes", {"sinceState": start, "maxChanges": 1})
        self.assertTrue(page["hasMoreChanges"])


# The same tests on PostgreSQL (see tests/pg.py).
pg.add_postgresql_variants(globals(), EmailChangesTests, EmailCopyTests, EmailImportTests, EmailParseTests, ResolveBlobTests)
