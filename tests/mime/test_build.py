"""
Tests for L{jmapd.mime.build}: the message of an Email/set create, checked
by parsing what was built and comparing the Email properties, and the
RFC 8621 section 4.6 rules that reject a create.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime

from twisted.trial.unittest import SynchronousTestCase

from jmapd.mime.body import body_value, decode_part
from jmapd.mime.build import BuildError, build_message
from jmapd.mime.headers import as_date, as_grouped_addresses, as_text, as_urls
from jmapd.mime.parse import find_part, parse_message

NOW = datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC)
BLOBS = {
    "png": b"\x89PNG\r\n\x1a\n" + bytes(range(256)),
    "txt": b"plain ascii\r\nlines\r\n",
    "lf": b"unix\nlines\n",
    "msg": "Subject: inner\r\nFrom: a@x\r\n\r\nbody ü\r\n".encode(),
}


def build(email: dict, body_values: dict | None = None) -> bytes:
    return build_message(email, body_values or {}, BLOBS.get, NOW, "jmap.example")


def roundtrip(email: dict, body_values: dict | None = None) -> tuple[bytes, dict]:
    raw = build(email, body_values)
    return raw, parse_message(raw)


def header(parsed: dict, name: str) -> list[str]:
    return [h["value"] for h in parsed["headers"] if h["name"].lower() == name.lower()]


class HeaderRoundTripTests(SynchronousTestCase):
    """
    Header properties come back as they were set.
    """

    def test_convenience_properties(self):
        """
        from, to, cc, bcc, replyTo, sender, subject, sentAt, messageId,
        inReplyTo and references round-trip, non-ASCII names and subject
        included.
        """
        email = {
            "from": [{"name": "Jürgen Müller", "email": "j@example.de"}],
            "sender": [{"name": None, "email": "s@example.com"}],
            "to": [
                {"name": "Smith, John", "email": "john@example.com"},
                {"name": 'Say "hi"', "email": "hi@example.com"},
                {"name": None, "email": "bare@example.com"},
            ],
            "cc": [{"name": "Ünïcödé", "email": "u@example.com"}],
            "bcc": [{"name": "B", "email": "b@example.com"}],
            "replyTo": [{"name": None, "email": "r@example.com"}],
            "subject": "Grüße — a subject long enough that it has to be folded over more than one line",
            "sentAt": "2024-03-04T05:06:07+05:30",
            "messageId": ["created@example.com"],
            "inReplyTo": ["parent@example.com"],
            "references": ["root@example.com", "parent@example.com"],
            "textBody": [{"partId": "1"}],
        }
        raw, parsed = roundtrip(email, {"1": {"value": "Hi"}})
        for key in [
            "from",
            "sender",
            "to",
            "cc",
            "bcc",
            "replyTo",
            "subject",
            "messageId",
            "inReplyTo",
            "references",
        ]:
            self.assertEqual(parsed[key], email[key], key)
        self.assertEqual(parsed["sentAt"], "2024-03-04T05:06:07+05:30")
        self.assertTrue(raw.isascii())
        for line in raw.split(b"\r\n"):
            self.assertLessEqual(len(line), 78, line)

    def test_header_forms(self):
        """
        header:{name}:as{form} properties of every form round-trip, :all
        makes one field per value, and Raw is written as given.
        """
        email = {
            "header:X-Text:asText": "Ça va? =?not an encoded word?=",
            "header:X-Grouped:asGroupedAddresses": [
                {"name": "Team", "addresses": [{"name": "A", "email": "a@x"}]},
                {"name": None, "addresses": [{"name": None, "email": "b@x"}]},
            ],
            "header:List-Unsubscribe:asURLs": ["mailto:u@x", "https://x/u"],
            "header:Resent-Date:asDate": "2024-01-02T03:04:05-08:00",
            "header:X-Tag:all": [" one", " two"],
            "header:X-Raw": " raw\r\n folded",
            "header:X-Null": None,
            "textBody": [{"partId": "1"}],
        }
        _, parsed = roundtrip(email, {"1": {"value": "x"}})
        self.assertEqual(as_text(header(parsed, "X-Text")[0]), "Ça va? =?not an encoded word?=")
        self.assertEqual(
            as_grouped_addresses(header(parsed, "X-Grouped")[0]), email["header:X-Grouped:asGroupedAddresses"]
        )
        self.assertEqual(as_urls(header(parsed, "List-Unsubscribe")[0]), ["mailto:u@x", "https://x/u"])
        self.assertEqual(as_date(header(parsed, "Resent-Date")[0]), "2024-01-02T03:04:05-08:00")
        self.assertEqual(header(parsed, "X-Tag"), [" one", " two"])
        self.assertEqual(header(parsed, "X-Raw"), [" raw\r\n folded"])
        self.assertEqual(header(parsed, "X-Null"), [])

    def test_messageIdDomainFromSender(self):
        """
        A generated Message-ID takes its right-hand side from the domain of
        the first From address (lower-cased), as mail clients do, rather
        than from the server's host name; a From address without a usable
        domain name leaves the host name.
        """
        text = {"textBody": [{"partId": "1"}]}
        values = {"1": {"value": "x"}}
        _, parsed = roundtrip({**text, "from": [{"email": "Alice@Mail.Example.ORG"}, {"email": "b@other.example"}]}, values)
        self.assertTrue(parsed["messageId"][0].endswith("@mail.example.org"), parsed["messageId"])
        for sender in ("alice@localhost", "alice@[192.0.2.1]", "undisclosed"):
            _, parsed = roundtrip({**text, "from": [{"email": sender}]}, values)
            self.assertTrue(parsed["messageId"][0].endswith("@jmap.example"), (sender, parsed["messageId"]))

    def test_generated_fields(self):
        """
        Without them, the server writes Date (now), a Message-ID at its
        host name and MIME-Version; with them, it writes the client's.
        """
        _, parsed = roundtrip({"textBody": [{"partId": "1"}]}, {"1": {"value": "x"}})
        self.assertEqual(parsed["sentAt"], "2024-01-02T03:04:05Z")
        self.assertEqual(len(parsed["messageId"]), 1)
        self.assertTrue(parsed["messageId"][0].endswith("@jmap.example"))
        self.assertEqual(header(parsed, "MIME-Version"), [" 1.0"])
        _, other = roundtrip({"textBody": [{"partId": "1"}]}, {"1": {"value": "x"}})
        self.assertNotEqual(parsed["messageId"], other["messageId"])

        _, given = roundtrip(
            {
                "header:Date": " Mon, 1 Jan 2024 00:00:00 +0000",
                "header:Message-ID:asMessageIds": ["m@x"],
                "textBody": [{"partId": "1"}],
            },
            {"1": {"value": "x"}},
        )
        self.assertEqual(given["sentAt"], "2024-01-01T00:00:00Z")
        self.assertEqual(given["messageId"], ["m@x"])
        self.assertEqual(len(header(given, "Date")), 1)

    def test_generated_fields_yield_to_body_structure(self):
        """
        A Date, Message-ID or MIME-Version set on the bodyStructure root is
        a field of the message, so the server generates none: RFC 8621
        section 4.6 asks for a generated Message-ID and Date only when they
        are not included, and a message has at most one of each.
        """
        raw, parsed = roundtrip(
            {
                "bodyStructure": {
                    "partId": "1",
                    "header:Date": " Mon, 1 Jan 2001 00:00:00 +0000",
                    "header:Message-ID": " <m@x>",
                    "header:MIME-Version": " 1.0",
                }
            },
            {"1": {"value": "x"}},
        )
        self.assertEqual(header(parsed, "Date"), [" Mon, 1 Jan 2001 00:00:00 +0000"])
        self.assertEqual(header(parsed, "Message-ID"), [" <m@x>"])
        self.assertEqual(header(parsed, "MIME-Version"), [" 1.0"])

    def test_naive_now_is_utc(self):
        """
        A naive C{now} is taken as UTC.
        """
        raw = build_message({}, {}, BLOBS.get, datetime(2024, 5, 6, 7, 8, 9), "h")
        self.assertEqual(parse_message(raw)["sentAt"], "2024-05-06T07:08:09Z")

    def test_crlf_line_endings(self):
        """
        Every line ends in CRLF, body lines from bodyValues included.
        """
        raw = build({"textBody": [{"partId": "1"}]}, {"1": {"value": "a\nb\r\nc\rd"}})
        self.assertIsNone(re.search(rb"(?<!\r)\n|\r(?!\n)", raw))


class BodyRoundTripTests(SynchronousTestCase):
    """
    Bodies come back as the textBody/htmlBody/attachments and
    bodyStructure that were set.
    """

    def test_text_only(self):
        """
        A lone textBody is a text/plain message whose body value is the
        bodyValue, with LF line endings.
        """
        raw, parsed = roundtrip({"textBody": [{"partId": "t"}]}, {"t": {"value": "line 1\nline 2\n"}})
        part = parsed["bodyStructure"]
        self.assertEqual((part["type"], part["charset"], part["_encoding"]), ("text/plain", "utf-8", "7bit"))
        self.assertEqual(body_value(raw, part)["value"], "line 1\nline 2\n")

    def test_non_ascii_and_long_lines(self):
        """
        Non-ASCII text and lines over 998 octets are transfer-encoded and
        decode back to the same value.
        """
        for value in ["Grüße aus Köln\n", "x" * 2000, "日本語のテキスト" * 50, "trailing space \nnext"]:
            raw, parsed = roundtrip({"textBody": [{"partId": "t"}]}, {"t": {"value": value}})
            part = parsed["bodyStructure"]
            self.assertIn(part["_encoding"], ("7bit", "quoted-printable", "base64"))
            self.assertEqual(body_value(raw, part)["value"], value)
            self.assertTrue(raw.isascii())

    def test_text_and_html(self):
        """
        textBody and htmlBody make a multipart/alternative.
        """
        raw, parsed = roundtrip(
            {"textBody": [{"partId": "t"}], "htmlBody": [{"partId": "h"}]},
            {"t": {"value": "Hi"}, "h": {"value": "<p>Hi</p>"}},
        )
        self.assertEqual(parsed["bodyStructure"]["type"], "multipart/alternative")
        self.assertEqual(body_value(raw, find_part(parsed, parsed["textBody"][0]))["value"], "Hi")
        self.assertEqual(body_value(raw, find_part(parsed, parsed["htmlBody"][0]))["value"], "<p>Hi</p>")
        self.assertEqual(parsed["attachments"], [])

    def test_attachments(self):
        """
        Attachments make a multipart/mixed; their octets, types, names
        (non-ASCII and long ones too) and dispositions come back;
        message/rfc822 is not base64-encoded.
        """
        long_name = "Übersicht über alles, was es gibt, mit einem sehr langen Namen.txt"
        raw, parsed = roundtrip(
            {
                "textBody": [{"partId": "t"}],
                "attachments": [
                    {"blobId": "png", "type": "image/png", "name": "bild.png"},
                    {"blobId": "txt", "type": "text/plain", "charset": "us-ascii", "name": long_name},
                    {
                        "blobId": "lf",
                        "type": "application/octet-stream",
                        "name": "ça.bin",
                        "disposition": "inline",
                    },
                    {"blobId": "msg", "type": "message/rfc822"},
                ],
            },
            {"t": {"value": "See attached."}},
        )
        self.assertEqual(parsed["bodyStructure"]["type"], "multipart/mixed")
        parts = [find_part(parsed, i) for i in parsed["attachments"]]
        self.assertEqual(
            [p["type"] for p in parts],
            ["image/png", "text/plain", "application/octet-stream", "message/rfc822"],
        )
        self.assertEqual([p["name"] for p in parts], ["bild.png", long_name, "ça.bin", None])
        self.assertEqual(
            [p["disposition"] for p in parts], ["attachment", "attachment", "inline", "attachment"]
        )
        self.assertEqual(
            [decode_part(raw, p) for p in parts], [BLOBS["png"], BLOBS["txt"], BLOBS["lf"], BLOBS["msg"]]
        )
        self.assertEqual(parts[1]["charset"], "us-ascii")
        self.assertEqual(parts[3]["_encoding"], "8bit")
        self.assertTrue(parsed["hasAttachment"])

    def test_explicit_content_disposition(self):
        """
        An attachment that sets its own C{header:Content-Disposition} gets
        that field only, not the server's default C{attachment} as well: a
        part has one Content-Disposition (RFC 2183), and RFC 8621 section
        4.6 wants the header fields a create gives to be unambiguous.
        """
        raw, parsed = roundtrip(
            {
                "textBody": [{"partId": "t"}],
                "attachments": [
                    {"blobId": "txt", "type": "text/plain", "header:Content-Disposition": " inline; filename=a.txt"},
                ],
            },
            {"t": {"value": "See attached."}},
        )
        part = find_part(parsed, parsed["attachments"][0])
        self.assertEqual(header(part, "Content-Disposition"), [" inline; filename=a.txt"])
        self.assertEqual((part["disposition"], part["name"]), ("inline", "a.txt"))

    def test_inline_image_is_related(self):
        """
        An attachment with a cid next to an HTML body goes in a
        multipart/related with the HTML, and is not counted as an
        attachment for hasAttachment.
        """
        raw, parsed = roundtrip(
            {
                "textBody": [{"partId": "t"}],
                "htmlBody": [{"partId": "h"}],
                "attachments": [{"blobId": "png", "type": "image/png", "cid": "logo@x"}],
            },
            {"t": {"value": "Hi"}, "h": {"value": '<img src="cid:logo@x">'}},
        )
        root = parsed["bodyStructure"]
        self.assertEqual(root["type"], "multipart/alternative")
        related = root["subParts"][1]
        self.assertEqual(related["type"], "multipart/related")
        image = related["subParts"][1]
        self.assertEqual((image["cid"], image["disposition"]), ("logo@x", "inline"))
        self.assertEqual(decode_part(raw, image), BLOBS["png"])
        self.assertFalse(parsed["hasAttachment"])

    def test_body_structure(self):
        """
        A bodyStructure is written as given: types, part headers,
        language, location and nesting.
        """
        structure = {
            "type": "multipart/mixed",
            "subParts": [
                {"partId": "a", "type": "text/plain", "language": ["en", "de"], "header:X-Part": " yes"},
                {
                    "type": "multipart/alternative",
                    "subParts": [
                        {"partId": "b", "type": "text/plain"},
                        {"partId": "c", "type": "text/html", "location": "http://x/c"},
                    ],
                },
                {"blobId": "png", "type": "image/png", "disposition": "attachment", "name": "a.png"},
            ],
        }
        raw, parsed = roundtrip(
            {"bodyStructure": structure},
            {"a": {"value": "A"}, "b": {"value": "B"}, "c": {"value": "<p>C</p>"}},
        )
        root = parsed["bodyStructure"]
        self.assertEqual(
            [p["type"] for p in root["subParts"]], ["text/plain", "multipart/alternative", "image/png"]
        )
        first = root["subParts"][0]
        self.assertEqual(first["language"], ["en", "de"])
        self.assertIn({"name": "X-Part", "value": " yes"}, first["headers"])
        self.assertEqual(root["subParts"][1]["subParts"][1]["location"], "http://x/c")
        self.assertEqual(parsed["textBody"], ["1", "2.1"])
        self.assertEqual(parsed["htmlBody"], ["1", "2.2"])
        self.assertEqual(body_value(raw, find_part(parsed, "2.2"))["value"], "<p>C</p>")

    def test_no_body(self):
        """
        An Email without a body is an empty text/plain message.
        """
        raw, parsed = roundtrip({"subject": "empty"})
        self.assertEqual(parsed["bodyStructure"]["type"], "text/plain")
        self.assertEqual(decode_part(raw, parsed["bodyStructure"]), b"")


class ValidationTests(SynchronousTestCase):
    """
    The constraints of RFC 8621 section 4.6 reject a create with a
    BuildError naming the property.
    """

    def assertBuildError(self, email, prop, body_values=None):
        error = self.assertRaises(BuildError, build, email, body_values)
        self.assertEqual(error.property, prop)
        self.assertTrue(error.description)
        self.assertEqual(error.not_found, [])
        return error

    def test_headers_property(self):
        """
        headers may not be given on the Email or on a part.
        """
        self.assertBuildError({"headers": []}, "headers")
        self.assertBuildError(
            {"textBody": [{"partId": "1", "headers": []}]}, "textBody/0/headers", {"1": {"value": ""}}
        )

    def test_same_field_twice(self):
        """
        Two properties for the same header field are rejected, whatever
        their form and capitalisation.
        """
        self.assertBuildError({"from": [], "header:FROM:asAddresses": []}, "header:FROM:asAddresses")
        self.assertBuildError({"subject": "a", "header:subject": " b"}, "header:subject")
        self.assertBuildError({"sentAt": None, "header:Date": " x"}, "header:Date")

    def test_forbidden_form(self):
        """
        A parsed form not allowed for a field, or an unknown form, is
        rejected.
        """
        self.assertBuildError({"header:From:asText": "x"}, "header:From:asText")
        self.assertBuildError({"header:Subject:asDate": "x"}, "header:Subject:asDate")
        self.assertBuildError({"header:X:asNothing": "x"}, "header:X:asNothing")

    def test_content_fields_on_email(self):
        """
        Content-* header fields may not be set on the Email.
        """
        self.assertBuildError({"header:Content-Type": " text/plain"}, "header:Content-Type")

    def test_body_structure_and_flat(self):
        """
        bodyStructure excludes textBody, htmlBody and attachments.
        """
        self.assertBuildError(
            {"bodyStructure": {"partId": "1"}, "attachments": []}, "attachments", {"1": {"value": ""}}
        )

    def test_body_structure_repeats_email_field(self):
        """
        The bodyStructure root may not set a field the Email sets.
        """
        self.assertBuildError(
            {"subject": "a", "bodyStructure": {"partId": "1", "header:Subject": " b"}},
            "bodyStructure",
            {"1": {"value": ""}},
        )

    def test_text_and_html_body_shape(self):
        """
        textBody and htmlBody hold exactly one part of their type.
        """
        values = {"1": {"value": ""}, "2": {"value": ""}}
        self.assertBuildError({"textBody": [{"partId": "1"}, {"partId": "2"}]}, "textBody", values)
        self.assertBuildError({"textBody": []}, "textBody", values)
        self.assertBuildError(
            {"htmlBody": [{"partId": "1", "type": "text/plain"}]}, "htmlBody/0/type", values
        )

    def test_body_type_case_insensitive(self):
        """
        The type of the textBody or htmlBody part is compared without
        regard to case, as media types are (RFC 2045 section 5.1): RFC
        8621 section 4.6 asks for a part of type text/plain or text/html,
        and C{TEXT/HTML} is one.
        """
        _, parsed = roundtrip(
            {"textBody": [{"partId": "1", "type": "Text/Plain"}], "htmlBody": [{"partId": "2", "type": "TEXT/HTML"}]},
            {"1": {"value": "a"}, "2": {"value": "<p>b</p>"}},
        )
        self.assertEqual(parsed["bodyStructure"]["type"], "multipart/alternative")
        self.assertEqual([find_part(parsed, p)["type"] for p in parsed["htmlBody"]], ["text/html"])

    def test_part_rules(self):
        """
        partId and blobId exclude each other; partId must be in
        bodyValues; charset and size go with blobId only; one of them is
        needed; Content-Transfer-Encoding may not be set; a structured
        property and the header: property for the same field conflict.
        """
        values = {"1": {"value": "x"}}
        self.assertBuildError({"textBody": [{"partId": "1", "blobId": "txt"}]}, "textBody/0/partId", values)
        self.assertBuildError({"textBody": [{"partId": "2"}]}, "textBody/0/partId", values)
        self.assertBuildError(
            {"textBody": [{"partId": "1", "charset": "utf-8"}]}, "textBody/0/charset", values
        )
        self.assertBuildError({"textBody": [{"partId": "1", "size": 1}]}, "textBody/0/size", values)
        self.assertBuildError({"attachments": [{"type": "image/png"}]}, "attachments/0/partId")
        self.assertBuildError(
            {"textBody": [{"partId": "1", "header:Content-Transfer-Encoding": " base64"}]},
            "textBody/0/header:Content-Transfer-Encoding",
            values,
        )
        self.assertBuildError(
            {"attachments": [{"blobId": "png", "type": "image/png", "header:Content-Type": " image/gif"}]},
            "attachments/0/type",
        )
        self.assertBuildError({"attachments": [{"blobId": "png", "nonsense": 1}]}, "attachments/0/nonsense")

    def test_body_value_flags(self):
        """
        isEncodingProblem and isTruncated must be false or omitted.
        """
        self.assertBuildError(
            {"textBody": [{"partId": "1"}]},
            "bodyValues/1/isTruncated",
            {"1": {"value": "", "isTruncated": True}},
        )
        self.assertBuildError(
            {"textBody": [{"partId": "1"}]},
            "bodyValues/1/isEncodingProblem",
            {"1": {"value": "", "isEncodingProblem": True}},
        )

    def test_multipart_rules(self):
        """
        A multipart part needs subParts and takes no partId.
        """
        self.assertBuildError({"bodyStructure": {"type": "multipart/mixed"}}, "bodyStructure/subParts")
        self.assertBuildError(
            {"bodyStructure": {"type": "multipart/mixed", "partId": "1", "subParts": [{"partId": "1"}]}},
            "bodyStructure/partId",
            {"1": {"value": ""}},
        )

    def test_bad_values(self):
        """
        Values of the wrong shape are rejected: a date without offset, a
        message id with brackets, an address without email, a Raw value
        with a bare line break.
        """
        self.assertBuildError({"sentAt": "2024-01-02T03:04:05"}, "sentAt")
        self.assertBuildError({"sentAt": "yesterday"}, "sentAt")
        self.assertBuildError({"messageId": ["<a@b>"]}, "messageId")
        self.assertBuildError({"to": [{"name": "x"}]}, "to")
        self.assertBuildError({"header:X-Raw": " a\r\nb"}, "header:X-Raw")
        self.assertBuildError({"subject": 5}, "subject")

    def test_no_line_breaks_or_nul_in_header_fields(self):
        """
        No value a client gives can end a header field early (and so add
        fields, or end the header) or put a NUL in one: a CR, LF or NUL in
        a language tag, a media type (also a final LF, which "$" would
        have let through), a message id, a URL or any single-line part
        property is rejected; so is a Raw value that folds into a line of
        white space only, and an email with an angle bracket, which would
        close the brackets it is written in.
        """
        values = {"1": {"value": "x"}}
        self.assertBuildError(
            {"textBody": [{"partId": "1", "language": ["en\r\nBcc: victim@example.org"]}]},
            "textBody/0/language",
            values,
        )
        self.assertBuildError(
            {"bodyStructure": {"partId": "1", "type": "text/plain\n"}}, "bodyStructure/type", values
        )
        self.assertBuildError({"bodyStructure": {"partId": "1", "type": "text/pl\x00in"}}, "bodyStructure/type", values)
        self.assertBuildError({"messageId": ["a\x00b@example.org"]}, "messageId")
        self.assertBuildError({"header:List-Post:asURLs": ["mailto:a@b\x00"]}, "header:List-Post:asURLs")
        for key in ("name", "charset", "disposition", "cid", "location"):
            self.assertBuildError({"attachments": [{"blobId": "txt", key: "a\x00b"}]}, f"attachments/0/{key}")
        self.assertBuildError({"header:X-Raw": " a\r\n \r\n b"}, "header:X-Raw")
        self.assertBuildError({"header:X-Raw": " a\r\n\t"}, "header:X-Raw")
        self.assertBuildError({"to": [{"email": "a@example.org>, <b@example.org"}]}, "to")
        self.assertBuildError({"from": [{"name": "A", "email": "a@example.org\x00"}]}, "from")

    def test_blob_not_found(self):
        """
        Every missing blobId is reported in not_found.
        """
        email = {
            "attachments": [
                {"blobId": "gone1", "type": "image/png"},
                {"blobId": "png", "type": "image/png"},
                {"blobId": "gone2"},
            ]
        }
        error = self.assertRaises(BuildError, build, email)
        self.assertEqual(error.not_found, ["gone1", "gone2"])
        self.assertIn("gone1", error.description)


class DateFormatTests(SynchronousTestCase):
    def test_sent_at_offsets(self):
        """
        sentAt keeps its offset, including Z and negative half hours.
        """
        for value, expected in [
            ("2024-01-02T03:04:05Z", "2024-01-02T03:04:05Z"),
            ("2024-01-02T03:04:05-03:30", "2024-01-02T03:04:05-03:30"),
        ]:
            _, parsed = roundtrip({"sentAt": value})
            self.assertEqual(parsed["sentAt"], expected)
