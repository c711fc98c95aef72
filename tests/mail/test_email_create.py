"""
Tests for Email/set create (RFC 8621 section 4.6) in L{jmapd.mail.email}:
the message is built, stored, threaded and counted like any other.
"""

from jmapd.mail.email import resolve_blob
from tests import pg
from tests.mail.test_email_support import MULTIPART, MailTestCase, message


class EmailCreateTests(MailTestCase):
    config = {"mail_attachments_max_size": 100, "mail_max_size": 4000, "mail_max_keywords_per_email": 2,
              "mail_max_mailboxes_per_email": 1}

    def create(self, **obj):
        """
        Create one Email; return (created, notCreated) for it.
        """
        obj.setdefault("mailboxIds", {self.mailbox("drafts"): True})
        response = self.call("Email/set", {"create": {"k": obj}})
        return (response["created"] or {}).get("k"), (response["notCreated"] or {}).get("k")

    def test_create_draft(self):
        """
        A draft with text and HTML bodies is built into a message: the
        created entry has id, blobId, threadId and size; Email/get reads it
        back; a Message-ID (at the From domain) and Date are generated; counts follow.
        """
        created, error = self.create(
            keywords={"$draft": True, "$seen": True},
            receivedAt="2023-05-06T07:08:09Z",
            **{
                "from": [{"name": "Alice", "email": "alice@example.com"}],
                "to": [{"name": None, "email": "bob@example.org"}],
                "subject": "Draft ✓",
                "textBody": [{"partId": "t", "type": "text/plain"}],
                "htmlBody": [{"partId": "h", "type": "text/html"}],
                "bodyValues": {"t": {"value": "Plain words"}, "h": {"value": "<p>Rich words</p>"}},
                "header:X-Client": " jmapd-test",
            },
        )
        self.assertIsNone(error)
        self.assertEqual(sorted(created), ["blobId", "id", "size", "threadId"])
        raw = self.env.blobs.read(created["blobId"])
        self.assertEqual(created["size"], len(raw))
        found = self.get_one(
            created["id"],
            ["subject", "from", "to", "keywords", "receivedAt", "messageId", "sentAt", "textBody", "htmlBody",
             "bodyValues", "header:X-Client", "mailboxIds", "threadId", "preview"],
            fetchAllBodyValues=True,
        )
        self.assertEqual(found["subject"], "Draft ✓")
        self.assertEqual(found["from"], [{"name": "Alice", "email": "alice@example.com"}])
        self.assertEqual(found["keywords"], {"$draft": True, "$seen": True})
        self.assertEqual(found["receivedAt"], "2023-05-06T07:08:09Z")
        self.assertEqual(found["header:X-Client"], " jmapd-test")
        self.assertTrue(found["messageId"][0].endswith("@example.com"))
        self.assertIsNotNone(found["sentAt"])
        self.assertEqual(found["threadId"], created["threadId"])
        values = {found["bodyValues"][p["partId"]]["value"] for p in found["textBody"] + found["htmlBody"]}
        self.assertEqual(values, {"Plain words", "<p>Rich words</p>"})
        self.assertEqual(found["preview"], "Plain words")
        self.assertEqual(self.count_of("drafts"), (1, 0, 1, 0))
        self.assertCountsExact()

    def test_received_at_defaults_to_now(self):
        """
        Without receivedAt the Email is received at the time of creation.
        """
        created, _ = self.create(subject="x", bodyStructure={"partId": "1", "type": "text/plain"},
                                 bodyValues={"1": {"value": "x"}})
        found = self.get_one(created["id"], ["receivedAt"])
        self.assertEqual(found["receivedAt"], "2023-11-14T22:13:20Z")

    def test_reply_threads(self):
        """
        A created reply joins the Thread of the message it replies to.
        """
        original = self.deliver(message("Question", "q@x"))
        created, _ = self.create(subject="Re: Question", inReplyTo=["q@x"], references=["q@x"],
                                 bodyStructure={"partId": "1", "type": "text/plain"},
                                 bodyValues={"1": {"value": "Answer"}})
        self.assertEqual(created["threadId"], original.thread_id)

    def test_attachment_from_blob_and_part(self):
        """
        Attachments may be uploaded blobs or body parts of existing
        Emails (part blob ids); their octets end up in the new message.
        """
        upload = self.upload(b"small file")
        source = self.deliver(MULTIPART)
        created, error = self.create(
            subject="With files",
            textBody=[{"partId": "t", "type": "text/plain"}],
            bodyValues={"t": {"value": "See attached."}},
            attachments=[
                {"blobId": upload, "type": "application/octet-stream", "name": "a.bin"},
                {"blobId": f"{source.blob_id}_2", "type": "application/pdf", "name": "plan.pdf"},
            ],
        )
        self.assertIsNone(error)
        found = self.get_one(created["id"], ["attachments", "hasAttachment"])
        self.assertTrue(found["hasAttachment"])
        names = [(p["name"], p["size"]) for p in found["attachments"]]
        self.assertEqual(names, [("a.bin", 10), ("plan.pdf", 9)])
        data = self.run_sync(lambda txn: resolve_blob(txn, self.env, self.alice, found["attachments"][1]["blobId"]),
                             write=False)
        self.assertEqual(data, b"%PDF-1.4\n")

    def test_blob_not_found(self):
        """
        Blob ids that do not exist (or belong to another account) are
        blobNotFound listing every one of them in notFound.
        """
        self.add_account("bob")
        foreign = self.upload(b"bob's", who="bob")
        created, error = self.create(
            subject="x",
            attachments=[{"blobId": "bnope", "type": "image/png"}, {"blobId": foreign, "type": "image/png"}],
        )
        self.assertIsNone(created)
        self.assertEqual(error["type"], "blobNotFound")
        self.assertEqual(error["notFound"], ["bnope", foreign])

    def test_invalid_properties(self):
        """
        Violations of the section 4.6 rules are invalidProperties naming
        the property: headers given whole, a header twice, Content-* on the
        Email, a partId missing from bodyValues, a forbidden form, a
        server-set property, an unknown property.
        """
        body = {"bodyStructure": {"partId": "1", "type": "text/plain"}, "bodyValues": {"1": {"value": "x"}}}
        cases = [
            ({"headers": [{"name": "X", "value": "y"}], **body}, "headers"),
            ({"subject": "a", "header:Subject": " b", **body}, None),
            ({"header:Content-Type": " text/plain", **body}, None),
            ({"bodyStructure": {"partId": "9", "type": "text/plain"}, "bodyValues": {}}, None),
            ({"header:From:asDate": "2020-01-01T00:00:00Z", **body}, None),
            ({"threadId": "T1", **body}, "threadId"),
            ({"size": 5, **body}, "size"),
            ({"nonsense": 1, **body}, "nonsense"),
            ({"keywords": {"a b": True}, **body}, "keywords"),
            ({"receivedAt": "today", **body}, "receivedAt"),
            ({"mailboxIds": {}, **body}, "mailboxIds"),
            ({"bodyValues": {"1": {"value": "x", "isTruncated": True}},
              "bodyStructure": {"partId": "1", "type": "text/plain"}}, None),
        ]
        for obj, name in cases:
            created, error = self.create(**obj)
            self.assertIsNone(created, obj)
            self.assertEqual(error["type"], "invalidProperties", obj)
            if name is not None:
                self.assertEqual(error["properties"], [name], obj)
            else:
                self.assertEqual(len(error["properties"]), 1, obj)
        response = self.call("Email/set", {"create": {"k": {"subject": "no mailbox", **body}}})
        self.assertEqual(response["notCreated"]["k"]["properties"], ["mailboxIds"])
        self.assertEqual(self.count_of("drafts"), (0, 0, 0, 0))

    def test_limits(self):
        """
        Too many keywords or Mailboxes, attachments over
        mail-attachments-max-size and a message over mail-max-size are
        rejected with tooManyKeywords, tooManyMailboxes and tooLarge.
        """
        body = {"bodyStructure": {"partId": "1", "type": "text/plain"}, "bodyValues": {"1": {"value": "x"}}}
        _, error = self.create(keywords={"a": True, "b": True, "c": True}, **body)
        self.assertEqual(error["type"], "tooManyKeywords")
        _, error = self.create(mailboxIds={self.mailbox("drafts"): True, self.mailbox("inbox"): True}, **body)
        self.assertEqual(error["type"], "tooManyMailboxes")
        big = self.upload(b"x" * 101)
        _, error = self.create(subject="big", attachments=[{"blobId": big, "type": "text/plain"}])
        self.assertEqual(error["type"], "tooLarge")
        _, error = self.create(bodyStructure={"partId": "1", "type": "text/plain"},
                               bodyValues={"1": {"value": "word " * 1000}})
        self.assertEqual(error["type"], "tooLarge")
        self.assertCountsExact()

    def test_create_then_update_by_reference(self):
        """
        A created Email may be updated and destroyed later in the same
        request by "#creationId".
        """
        responses = self.calls([
            ["Email/set", {"accountId": self.alice, "create": {"d": {
                "mailboxIds": {self.mailbox("drafts"): True}, "subject": "x",
                "bodyStructure": {"partId": "1", "type": "text/plain"}, "bodyValues": {"1": {"value": "x"}}}}}, "1"],
            ["Email/set", {"accountId": self.alice, "update": {"#d": {"keywords/$seen": True}}}, "2"],
            ["Email/get", {"accountId": self.alice, "ids": ["#d"], "properties": ["keywords"]}, "3"],
            ["Email/set", {"accountId": self.alice, "destroy": ["#d"]}, "4"],
        ])
        email_id = responses[0][1]["created"]["d"]["id"]
        self.assertEqual(responses[1][1]["updated"], {email_id: None})
        self.assertEqual(responses[2][1]["list"][0]["keywords"], {"$seen": True})
        self.assertEqual(responses[3][1]["destroyed"], [email_id])
        self.assertEqual(self.count_of("drafts"), (0, 0, 0, 0))
        self.assertCountsExact()


# The same tests on PostgreSQL (see tests/pg.py).
pg.add_postgresql_variants(globals(), EmailCreateTests)
