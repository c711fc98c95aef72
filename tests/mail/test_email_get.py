"""
Tests for Email/get (RFC 8621 section 4.2) in L{jmapd.mail.email}: every
property, the header forms, body parts and values, and the defaults.
"""

from jmapd.mail.email import DEFAULT_PROPERTIES
from jmapd.storage import emails
from tests import pg
from tests.mail.test_email_support import MULTIPART, MailTestCase, message


class EmailGetTests(MailTestCase):
    def setUp(self):
        super().setUp()
        self.multi = self.deliver(MULTIPART, roles=("inbox", "archive"), keywords=["$seen", "work"],
                                  received_at=1_696_321_800_500)
        self.plain = self.deliver(
            message(
                "Re: Plans", "p@x", in_reply_to="multi@example.com", references=["root@x", "multi@example.com"],
                headers=[("Reply-To", "Team <team@example.com>"), ("Sender", "s@example.com"),
                         ("Bcc", "hidden@example.com")],
            ),
            received_at=1_696_321_801_000,
        )

    def test_default_properties(self):
        """
        Without properties, Email/get returns the RFC's default list, not
        every property (no headers, no bodyStructure).
        """
        found = self.get_one(self.plain.id)
        self.assertEqual(sorted(found), sorted(DEFAULT_PROPERTIES))
        found = self.call("Email/get", {"ids": [self.plain.id], "properties": None})["list"][0]
        self.assertEqual(sorted(found), sorted(DEFAULT_PROPERTIES))

    def test_metadata(self):
        """
        id, blobId, threadId, mailboxIds, keywords, size and receivedAt
        are what the store recorded at ingest.
        """
        found = self.get_one(
            self.multi.id, ["blobId", "threadId", "mailboxIds", "keywords", "size", "receivedAt"]
        )
        self.assertEqual(
            found,
            {
                "id": self.multi.id,
                "blobId": self.multi.blob_id,
                "threadId": self.multi.thread_id,
                "mailboxIds": {self.mailbox("inbox"): True, self.mailbox("archive"): True},
                "keywords": {"$seen": True, "work": True},
                "size": len(MULTIPART),
                "receivedAt": "2023-10-03T08:30:00.5Z",
            },
        )
        self.assertEqual(self.env.blobs.read(found["blobId"]), MULTIPART)

    def test_convenience_headers(self):
        """
        messageId, inReplyTo, references, the address properties, subject
        and sentAt are the parsed header fields (encoded words decoded,
        groups flattened).
        """
        found = self.get_one(
            self.multi.id,
            ["messageId", "inReplyTo", "references", "sender", "from", "to", "cc", "bcc", "replyTo", "subject",
             "sentAt", "hasAttachment", "preview"],
        )
        del found["id"]
        self.assertEqual(
            found,
            {
                "messageId": ["multi@example.com"],
                "inReplyTo": None,
                "references": None,
                "sender": None,
                "from": [{"name": "José", "email": "jose@example.com"}],
                "to": [
                    {"name": None, "email": "a@example.com"},
                    {"name": "B. Person", "email": "b@example.com"},
                    {"name": None, "email": "c@example.com"},
                ],
                "cc": [{"name": None, "email": "d@example.com"}],
                "bcc": None,
                "replyTo": None,
                "subject": "Café plans",
                "sentAt": "2023-10-03T08:30:00Z",
                "hasAttachment": True,
                "preview": "Café at noon?",
            },
        )
        found = self.get_one(self.plain.id, ["inReplyTo", "references", "replyTo", "sender", "bcc", "sentAt"])
        self.assertEqual(found["inReplyTo"], ["multi@example.com"])
        self.assertEqual(found["references"], ["root@x", "multi@example.com"])
        self.assertEqual(found["replyTo"], [{"name": "Team", "email": "team@example.com"}])
        self.assertEqual(found["sender"], [{"name": None, "email": "s@example.com"}])
        self.assertEqual(found["bcc"], [{"name": None, "email": "hidden@example.com"}])
        self.assertEqual(found["sentAt"], "2023-10-02T10:00:00+02:00")

    def test_headers(self):
        """
        headers lists every header field in order with its Raw value.
        """
        found = self.get_one(self.multi.id, ["headers"])["headers"]
        self.assertEqual(found[0], {"name": "From", "value": " =?UTF-8?Q?Jos=C3=A9?= <jose@example.com>"})
        self.assertEqual([h["name"] for h in found][-3:], ["X-Custom", "MIME-Version", "Content-Type"])

    def test_header_forms(self):
        """
        header:Name[:asForm][:all] gives the last instance (or all) in the
        asked form; the response keeps the client's capitalisation; a
        missing field is null, or [] with :all.
        """
        names = [
            "header:x-CUSTOM",
            "header:X-Custom:all",
            "header:Subject:asText",
            "header:From:asAddresses",
            "header:To:asGroupedAddresses",
            "header:Message-ID:asMessageIds",
            "header:Date:asDate",
            "header:List-Post:asURLs",
            "header:X-Missing",
            "header:X-Missing:all",
            "header:X-Custom:asText:all",
        ]
        found = self.get_one(self.multi.id, names)
        self.assertEqual(found["header:x-CUSTOM"], " two")
        self.assertEqual(found["header:X-Custom:all"], [" one", " two"])
        self.assertEqual(found["header:Subject:asText"], "Café plans")
        self.assertEqual(found["header:From:asAddresses"], [{"name": "José", "email": "jose@example.com"}])
        self.assertEqual(
            found["header:To:asGroupedAddresses"],
            [
                {
                    "name": "Friends",
                    "addresses": [
                        {"name": None, "email": "a@example.com"},
                        {"name": "B. Person", "email": "b@example.com"},
                    ],
                },
                {"name": None, "addresses": [{"name": None, "email": "c@example.com"}]},
            ],
        )
        self.assertEqual(found["header:Message-ID:asMessageIds"], ["multi@example.com"])
        self.assertEqual(found["header:Date:asDate"], "2023-10-03T08:30:00Z")
        self.assertEqual(found["header:List-Post:asURLs"], ["mailto:list@example.com"])
        self.assertIsNone(found["header:X-Missing"])
        self.assertEqual(found["header:X-Missing:all"], [])
        self.assertEqual(found["header:X-Custom:asText:all"], ["one", "two"])

    def test_forbidden_header_forms(self):
        """
        A form not allowed for a field, an unknown form, a bad suffix
        order or an unknown property is invalidArguments.
        """
        for name in ["header:From:asDate", "header:Subject:asAddresses", "header:X:asNothing",
                     "header:X:all:asText", "header:", "nope", "header:Date:asURLs"]:
            error = self.call_error("Email/get", {"ids": [self.multi.id], "properties": [name]})
            self.assertEqual(error["type"], "invalidArguments", name)

    def test_body_structure(self):
        """
        bodyStructure is the MIME tree with the default body properties
        and subParts; leaf parts have blob ids, multiparts null ones.
        """
        root = self.get_one(self.multi.id, ["bodyStructure"])["bodyStructure"]
        self.assertEqual(root["type"], "multipart/mixed")
        self.assertIsNone(root["partId"])
        self.assertIsNone(root["blobId"])
        alternative, pdf, attached = root["subParts"]
        self.assertEqual([p["type"] for p in alternative["subParts"]], ["text/plain", "text/html"])
        self.assertEqual(
            pdf,
            {
                "partId": "2",
                "blobId": f"{self.multi.blob_id}_2",
                "size": 9,
                "name": "plan.pdf",
                "type": "application/pdf",
                "charset": None,
                "disposition": "attachment",
                "cid": None,
                "language": None,
                "location": None,
                "subParts": None,
            },
        )
        self.assertEqual(alternative["subParts"][0]["blobId"], f"{self.multi.blob_id}_1-1")
        self.assertEqual(attached["type"], "message/rfc822")

    def test_body_lists(self):
        """
        textBody, htmlBody and attachments follow RFC 8621 section 4.1.4
        and carry only the default body properties (no subParts,
        headers).
        """
        found = self.get_one(self.multi.id, ["textBody", "htmlBody", "attachments"])
        self.assertEqual([p["partId"] for p in found["textBody"]], ["1.1"])
        self.assertEqual([p["partId"] for p in found["htmlBody"]], ["1.2"])
        self.assertEqual([p["partId"] for p in found["attachments"]], ["2", "3"])
        self.assertEqual(
            sorted(found["textBody"][0]),
            sorted(["partId", "blobId", "size", "name", "type", "charset", "disposition", "cid", "language",
                    "location"]),
        )

    def test_body_properties(self):
        """
        bodyProperties chooses the part properties, including headers and
        header:* forms of the part's own fields; an unknown one is
        invalidArguments.
        """
        found = self.get_one(
            self.multi.id, ["attachments", "bodyStructure"],
            bodyProperties=["partId", "headers", "header:Content-Type", "header:Content-Disposition:asRaw:all"],
        )
        pdf = found["attachments"][0]
        self.assertEqual(
            pdf,
            {
                "partId": "2",
                "headers": [
                    {"name": "Content-Type", "value": ' application/pdf; name="plan.pdf"'},
                    {"name": "Content-Disposition", "value": ' attachment; filename="plan.pdf"'},
                    {"name": "Content-Transfer-Encoding", "value": " base64"},
                ],
                "header:Content-Type": ' application/pdf; name="plan.pdf"',
                "header:Content-Disposition:asRaw:all": [' attachment; filename="plan.pdf"'],
            },
        )
        self.assertNotIn("subParts", found["bodyStructure"])
        error = self.call_error(
            "Email/get", {"ids": [self.multi.id], "properties": ["textBody"], "bodyProperties": ["bogus"]}
        )
        self.assertEqual(error["type"], "invalidArguments")

    def test_body_values(self):
        """
        bodyValues holds the text parts the fetch* arguments ask for,
        decoded (transfer encoding and charset); none by default.
        """
        found = self.get_one(self.multi.id, ["bodyValues"])
        self.assertEqual(found["bodyValues"], {})
        found = self.get_one(self.multi.id, ["bodyValues"], fetchTextBodyValues=True)
        self.assertEqual(
            found["bodyValues"], {"1.1": {"value": "Café at noon?", "isEncodingProblem": False, "isTruncated": False}}
        )
        found = self.get_one(self.multi.id, ["bodyValues"], fetchHTMLBodyValues=True)
        self.assertEqual(list(found["bodyValues"]), ["1.2"])
        found = self.get_one(self.multi.id, ["bodyValues"], fetchAllBodyValues=True)
        self.assertEqual(sorted(found["bodyValues"]), ["1.1", "1.2"])

    def test_max_body_value_bytes(self):
        """
        maxBodyValueBytes truncates on a character boundary and marks the
        value truncated.
        """
        found = self.get_one(self.multi.id, ["bodyValues"], fetchTextBodyValues=True, maxBodyValueBytes=4)
        self.assertEqual(found["bodyValues"]["1.1"], {"value": "Caf", "isEncodingProblem": False,
                                                      "isTruncated": True})

    def test_list_properties_do_not_read_the_message(self):
        """
        Every list property and header form is served from the database:
        Email/get works with the message file gone.  Only bodyValues
        needs it.
        """
        path = self.env.blobs.path(self.multi.blob_id)
        import os

        os.unlink(path)
        names = [
            "blobId", "threadId", "mailboxIds", "keywords", "size", "receivedAt", "messageId", "inReplyTo",
            "references", "sender", "from", "to", "cc", "bcc", "replyTo", "subject", "sentAt", "hasAttachment",
            "preview", "headers", "header:X-Custom:all", "bodyStructure", "textBody", "htmlBody", "attachments",
        ]
        found = self.get_one(self.multi.id, names)
        self.assertEqual(found["subject"], "Café plans")
        [[name, _, _]] = self.calls([["Email/get", {"accountId": self.alice, "ids": [self.multi.id],
                                                    "properties": ["bodyValues"], "fetchAllBodyValues": True}, "c"]])
        self.assertEqual(name, "error")

    def test_ids_null_and_not_found(self):
        """
        ids null returns every Email; an unknown id is notFound.
        """
        response = self.call("Email/get", {"ids": None, "properties": ["id"]})
        self.assertEqual(sorted(e["id"] for e in response["list"]), sorted([self.multi.id, self.plain.id]))
        response = self.call("Email/get", {"ids": ["Mnope", self.plain.id], "properties": ["subject"]})
        self.assertEqual(response["notFound"], ["Mnope"])
        self.assertEqual(response["list"], [{"id": self.plain.id, "subject": "Re: Plans"}])

    def test_other_account_invisible(self):
        """
        One account's Emails are notFound for another.
        """
        self.add_account("bob")
        response = self.call("Email/get", {"ids": [self.plain.id]}, who="bob")
        self.assertEqual(response["notFound"], [self.plain.id])


class DateTests(MailTestCase):
    def test_utc_date(self):
        """
        receivedAt is a UTCDate: "Z", and a fraction only when non-zero.
        """
        self.assertEqual(emails.utc_date(0), "1970-01-01T00:00:00Z")
        self.assertEqual(emails.utc_date(1_500), "1970-01-01T00:00:01.5Z")

    def test_parse_date(self):
        """
        Dates are parsed with their offset; UTCDates must end in Z (a zero
        fraction, as JavaScript writes it, is accepted); anything else is
        None.
        """
        self.assertEqual(emails.parse_date_ms("1970-01-01T01:00:00+01:00"), 0)
        self.assertEqual(emails.parse_date_ms("1970-01-01T00:00:01.25Z", utc_only=True), 1250)
        self.assertIsNone(emails.parse_date_ms("1970-01-01T01:00:00+01:00", utc_only=True))
        self.assertEqual(emails.parse_date_ms("1970-01-01T00:00:00.000Z", utc_only=True), 0)
        self.assertIsNone(emails.parse_date_ms("1970-01-01 00:00:00Z"))
        self.assertIsNone(emails.parse_date_ms("2023-02-30T00:00:00Z"))
        self.assertIsNone(emails.parse_date_ms(17))


# The same tests on PostgreSQL (see tests/pg.py).
pg.add_postgresql_variants(globals(), DateTests, EmailGetTests)
