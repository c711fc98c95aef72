"""
Tests for Email/query (RFC 8621 section 4.4, RFC 8620 section 5.5) in
L{jmapd.mail.query}: every filter condition and operator, every sort
property and collation, collapseThreads, the window arguments and every
error, on a known corpus with the expected answer written out.
"""

from __future__ import annotations

from typing import Any

from jmapd.mail.query import parse_text
from jmapd.storage.search import Term
from tests import pg
from tests.mail.test_email_support import MailTestCase, message

# receivedAt of the corpus, E1 oldest (2023-11-14T22:13:20Z onwards, an hour apart).
T0 = 1_700_000_000_000
HOUR = 3_600_000

E2_RAW = (
    b"From: Bob Brown <bob@example.org>\r\n"
    b"To: Alice Archer <alice@example.com>\r\n"
    b"Subject: Re: Project kickoff\r\n"
    b"Date: Mon, 02 Oct 2023 09:00:00 +0000\r\n"
    b"Message-ID: <k2@example.org>\r\n"
    b"In-Reply-To: <k1@example.com>\r\n"
    b"MIME-Version: 1.0\r\n"
    b'Content-Type: multipart/mixed; boundary="b"\r\n'
    b"\r\n"
    b"--b\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\n"
    b"\r\n"
    b"Sounds good, the budget is attached.\r\n"
    b"--b\r\n"
    b'Content-Type: application/vnd.ms-excel; name="budget.xlsx"\r\n'
    b'Content-Disposition: attachment; filename="budget.xlsx"\r\n'
    b"Content-Transfer-Encoding: base64\r\n"
    b"\r\n"
    b"AAAA\r\n"
    b"--b--\r\n"
)

E3_RAW = (
    "From: Zoë Zimmer <zoe@example.com>\r\n"
    "To: alice@example.com\r\n"
    "Subject: Holiday photos\r\n"
    "Date: Sun, 01 Oct 2023 12:00:00 +0000\r\n"
    "Message-ID: <h1@example.com>\r\n"
    "Content-Type: text/html; charset=utf-8\r\n"
    "\r\n"
    "<html><head><style>p { color: red }</style></head>"
    "<body><p>Look at the <b>beach</b> pictures</p></body></html>\r\n"
).encode()

E6_RAW = (
    b"From: =?UTF-8?Q?=C3=89mile?= <emile@example.fr>\r\n"
    b"To: list@example.com\r\n"
    b"Subject: [list] 10 tips\r\n"
    b"Date: Wed, 04 Oct 2023 08:00:00 +0000\r\n"
    b"Message-ID: <d1@example.fr>\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\n"
    b"\r\n"
    b"Tips for the bus and buses.\r\n" + b"Filler line to make this message the largest one.\r\n" * 80
)


class CorpusTestCase(MailTestCase):
    """
    Six Emails in four Threads:

      - E1 "Project kickoff", Alice Archer to bob, cc carol; Inbox; $seen
      - E2 "Re: Project kickoff" (Thread of E1), Bob to Alice Archer,
        attachment budget.xlsx; Inbox and Archive; $seen $flagged
      - E3 "Holiday photos", HTML only, Zoë to alice@; Archive; no keywords
      - E4 "invoice 42", billing@ (no name) to Accounts Payable, bcc
        audit, X-Priority; Trash; $seen
      - E5 "Re: Holiday photos" (Thread of E3), alice@ to Zoë, no Date;
        Inbox; $draft
      - E6 "[list] 10 tips", Émile (encoded word) to list@, the largest;
        Inbox; no keywords
    """

    def setUp(self) -> None:
        super().setUp()
        self.inbox = self.mailbox("inbox")
        self.archive = self.mailbox("archive")
        self.trash = self.mailbox("trash")
        raws = {
            "E1": message(
                "Project kickoff", "k1@example.com", sender="Alice Archer <alice@example.com>",
                to="bob@example.org", date="Mon, 02 Oct 2023 10:00:00 +0200",
                headers=[("Cc", "carol@example.net")], body="Let's plan the café meeting.\r\n",
            ),
            "E2": E2_RAW,
            "E3": E3_RAW,
            "E4": message(
                "invoice 42", "i1@shop.example", sender="billing@shop.example",
                to="Accounts Payable <alice@example.com>", date="Tue, 03 Oct 2023 10:00:00 +0000",
                headers=[("Bcc", "audit@example.com"), ("X-Priority", "1")],
                body="Your invoice total is 42 EUR.\r\n",
            ),
            "E5": message(
                "Re: Holiday photos", "h2@example.com", in_reply_to="h1@example.com",
                sender="alice@example.com", to="Zoë Zimmer <zoe@example.com>", body="Lovely beach!\r\n",
            ).replace(b"Date: Mon, 02 Oct 2023 10:00:00 +0200\r\n", b""),
            "E6": E6_RAW,
        }
        placement = {
            "E1": ([self.inbox], ["$seen"]),
            "E2": ([self.inbox, self.archive], ["$seen", "$flagged"]),
            "E3": ([self.archive], []),
            "E4": ([self.trash], ["$seen"]),
            "E5": ([self.inbox], ["$draft"]),
            "E6": ([self.inbox], []),
        }
        self.ids: dict[str, str] = {}
        self.created = {}
        for index, name in enumerate(["E1", "E2", "E3", "E4", "E5", "E6"]):
            mailboxes, keywords = placement[name]
            created = self.deliver(
                raws[name], roles=(), mailbox_ids=mailboxes, keywords=keywords, received_at=T0 + index * HOUR
            )
            self.ids[name] = created.id
            self.created[name] = created
        self.names = {email_id: name for name, email_id in self.ids.items()}

    def query(self, filter: Any = None, sort: Any = None, **arguments: Any) -> list[str]:
        """
        The names of the Emails an Email/query finds (receivedAt ascending
        unless a sort is given).
        """
        if sort is None:
            sort = [{"property": "receivedAt"}]
        response = self.call("Email/query", {"filter": filter, "sort": sort, **arguments})
        return [self.names[email_id] for email_id in response["ids"]]

    def query_error(self, **arguments: Any) -> dict[str, Any]:
        return self.call_error("Email/query", arguments)


ALL = ["E1", "E2", "E3", "E4", "E5", "E6"]


class FilterTests(CorpusTestCase):
    def test_no_filter(self) -> None:
        """
        A null filter finds every Email of the account.
        """
        self.assertEqual(self.query(), ALL)

    def test_empty_condition(self) -> None:
        """
        A FilterCondition with no properties is true for every Email.
        """
        self.assertEqual(self.query({}), ALL)

    def test_in_mailbox(self) -> None:
        """
        inMailbox finds the Emails in that Mailbox, including those also in
        another one; an unknown Mailbox finds nothing.
        """
        self.assertEqual(self.query({"inMailbox": self.inbox}), ["E1", "E2", "E5", "E6"])
        self.assertEqual(self.query({"inMailbox": self.archive}), ["E2", "E3"])
        self.assertEqual(self.query({"inMailbox": "mnosuchmailbox"}), [])

    def test_in_mailbox_other_than(self) -> None:
        """
        inMailboxOtherThan finds Emails in at least one Mailbox not listed:
        E4, only in Trash, is left out by [Trash]; E2 is also in Archive so
        [Inbox] keeps it.
        """
        self.assertEqual(self.query({"inMailboxOtherThan": [self.trash]}), ["E1", "E2", "E3", "E5", "E6"])
        self.assertEqual(self.query({"inMailboxOtherThan": [self.inbox]}), ["E2", "E3", "E4"])
        self.assertEqual(self.query({"inMailboxOtherThan": [self.inbox, self.archive, self.trash]}), [])
        self.assertEqual(self.query({"inMailboxOtherThan": []}), ALL)

    def test_before_and_after(self) -> None:
        """
        before is strictly earlier than the receivedAt given; after is the
        same time or later.
        """
        e3 = "2023-11-15T00:13:20Z"  # T0 + 2 hours
        self.assertEqual(self.query({"before": e3}), ["E1", "E2"])
        self.assertEqual(self.query({"after": e3}), ["E3", "E4", "E5", "E6"])
        self.assertEqual(self.query({"after": "2023-11-14T23:13:20Z", "before": e3}), ["E2"])

    def test_size(self) -> None:
        """
        minSize is inclusive, maxSize exclusive.
        """
        biggest = self.created["E6"].size
        self.assertEqual(self.query({"minSize": biggest}), ["E6"])
        self.assertEqual(self.query({"minSize": biggest + 1}), [])
        self.assertEqual(self.query({"maxSize": biggest}), ["E1", "E2", "E3", "E4", "E5"])
        self.assertEqual(self.query({"maxSize": biggest + 1}), ALL)

    def test_has_keyword(self) -> None:
        """
        hasKeyword and notKeyword look at the Email's own keywords,
        case-insensitively.
        """
        self.assertEqual(self.query({"hasKeyword": "$seen"}), ["E1", "E2", "E4"])
        self.assertEqual(self.query({"hasKeyword": "$SEEN"}), ["E1", "E2", "E4"])
        self.assertEqual(self.query({"notKeyword": "$seen"}), ["E3", "E5", "E6"])
        self.assertEqual(self.query({"hasKeyword": "$flagged"}), ["E2"])

    def test_all_in_thread_have_keyword(self) -> None:
        """
        allInThreadHaveKeyword needs every Email of the Thread to have it:
        both of E1's Thread are $seen, and E4 is alone in its Thread.
        """
        self.assertEqual(self.query({"allInThreadHaveKeyword": "$seen"}), ["E1", "E2", "E4"])
        self.assertEqual(self.query({"allInThreadHaveKeyword": "$draft"}), [])

    def test_some_in_thread_have_keyword(self) -> None:
        """
        someInThreadHaveKeyword matches every Email of a Thread in which
        one Email has it.
        """
        self.assertEqual(self.query({"someInThreadHaveKeyword": "$flagged"}), ["E1", "E2"])
        self.assertEqual(self.query({"someInThreadHaveKeyword": "$draft"}), ["E3", "E5"])

    def test_none_in_thread_have_keyword(self) -> None:
        """
        noneInThreadHaveKeyword excludes whole Threads.
        """
        self.assertEqual(self.query({"noneInThreadHaveKeyword": "$flagged"}), ["E3", "E4", "E5", "E6"])
        self.assertEqual(self.query({"noneInThreadHaveKeyword": "$seen"}), ["E3", "E5", "E6"])

    def test_has_attachment(self) -> None:
        """
        hasAttachment matches the Email's hasAttachment property.
        """
        self.assertEqual(self.query({"hasAttachment": True}), ["E2"])
        self.assertEqual(self.query({"hasAttachment": False}), ["E1", "E3", "E4", "E5", "E6"])

    def test_text(self) -> None:
        """
        text looks in the addresses, subject, text and HTML bodies and
        attachment names.
        """
        self.assertEqual(self.query({"text": "alice"}), ["E1", "E2", "E3", "E4", "E5"])
        self.assertEqual(self.query({"text": "kickoff"}), ["E1", "E2"])
        self.assertEqual(self.query({"text": "beach"}), ["E3", "E5"])
        self.assertEqual(self.query({"text": "budget.xlsx"}), ["E2"])
        self.assertEqual(self.query({"text": "audit@example.com"}), ["E4"])

    def test_text_folds_case_and_accents(self) -> None:
        """
        Matching ignores case and diacritics, both ways.
        """
        self.assertEqual(self.query({"text": "CAFE"}), ["E1"])
        self.assertEqual(self.query({"text": "café"}), ["E1"])
        self.assertEqual(self.query({"text": "emile"}), ["E6"])
        self.assertEqual(self.query({"text": "zoe"}), ["E3", "E5"])

    def test_text_words_are_prefixes(self) -> None:
        """
        A word finds the words it begins ("bus" finds "buses"), and every
        word of the text must be found.
        """
        self.assertEqual(self.query({"text": "invo"}), ["E4"])
        self.assertEqual(self.query({"text": "beach lovely"}), ["E5"])
        self.assertEqual(self.query({"text": "beach nothing"}), [])

    def test_text_phrase(self) -> None:
        """
        Quoted text is a phrase: those words in that order, whole words.
        """
        self.assertEqual(self.query({"text": '"the bus"'}), ["E6"])
        self.assertEqual(self.query({"text": '"bus the"'}), [])
        self.assertEqual(self.query({"text": "'the bus'"}), ["E6"])
        self.assertEqual(self.query({"text": '"the bu"'}), [])

    def test_text_without_words(self) -> None:
        """
        Text with no letters or digits searches for nothing, so it does not
        narrow the result.
        """
        self.assertEqual(self.query({"text": ""}), ALL)
        self.assertEqual(self.query({"text": " -- "}), ALL)

    def test_text_with_nul(self) -> None:
        """
        A String with a NUL (JSON allows one) is searched with the NUL as
        white space, not a serverFail; SearchSnippet/get likewise.
        """
        self.assertEqual(self.query({"text": "kickoff\x00project"}), ["E1", "E2"])
        response = self.call("SearchSnippet/get", {"filter": {"subject": "\x00kickoff"}, "emailIds": [self.ids["E1"]]})
        self.assertEqual(response["list"][0]["subject"], "Project <mark>kickoff</mark>")

    def test_html_markup_is_not_text(self) -> None:
        """
        Tags, attribute names and the content of head and style in HTML
        are not searched.
        """
        self.assertEqual(self.query({"body": "color"}), [])
        self.assertEqual(self.query({"body": "html"}), [])
        self.assertEqual(self.query({"body": "pictures"}), ["E3"])

    def test_html_alt_and_title_are_text(self) -> None:
        """
        The alt and title attributes of an HTML body are presented to the
        reader, so text and body find their words (RFC 8621 section
        4.4.1); other attributes are markup.
        """
        html = self.deliver(
            b"From: zoe@example.com\r\nSubject: Pictures\r\nContent-Type: text/html\r\n\r\n"
            b'<p>Look: <img src="sandcastle.png" alt="Our sandcastle" title="Sunset"></p>\r\n',
            received_at=T0 + 10 * HOUR,
        ).id
        for filter in ({"body": "sandcastle"}, {"text": "sunset"}):
            self.assertEqual(self.call("Email/query", {"filter": filter})["ids"], [html], filter)
        self.assertEqual(self.call("Email/query", {"filter": {"body": "png"}})["ids"], [])

    def test_attached_message_is_text(self) -> None:
        """
        The text of an attached message (message/rfc822) is body text:
        text and body find words of its body, subject and addresses
        (RFC 8621 section 4.4.1: text SHOULD look inside any part the
        server can convert to text; body may leave out only parts other
        than text/* and message/*).  Its words are not the outer subject.
        """
        forwarded = self.deliver(
            b"From: zoe@example.com\r\nSubject: Fwd: minutes\r\n"
            b'Content-Type: multipart/mixed; boundary="b"\r\n\r\n'
            b"--b\r\nContent-Type: text/plain\r\n\r\nSee below.\r\n"
            b"--b\r\nContent-Type: message/rfc822\r\n\r\n"
            b"From: Quentin Quill <quentin@example.net>\r\nSubject: Quarterly minutes\r\n\r\n"
            b"The xylophone budget was approved.\r\n"
            b"--b--\r\n",
            received_at=T0 + 10 * HOUR,
        ).id
        for filter in ({"body": "xylophone"}, {"text": "xylophone"}, {"text": "quarterly"}, {"body": "quill"}):
            self.assertEqual(self.call("Email/query", {"filter": filter})["ids"], [forwarded], filter)
        self.assertEqual(self.call("Email/query", {"filter": {"subject": "quarterly"}})["ids"], [])

    def test_address_fields(self) -> None:
        """
        from, to, cc and bcc each look in their own header field, at names
        and addresses.
        """
        self.assertEqual(self.query({"from": "alice"}), ["E1", "E5"])
        self.assertEqual(self.query({"from": "zimmer"}), ["E3"])
        self.assertEqual(self.query({"from": "shop.example"}), ["E4"])
        self.assertEqual(self.query({"to": "zoe"}), ["E5"])
        self.assertEqual(self.query({"to": "payable"}), ["E4"])
        self.assertEqual(self.query({"cc": "carol"}), ["E1"])
        self.assertEqual(self.query({"bcc": "audit"}), ["E4"])
        self.assertEqual(self.query({"bcc": "alice"}), [])

    def test_subject_and_body(self) -> None:
        """
        subject looks only at the subject and body only at the body parts.
        """
        self.assertEqual(self.query({"subject": "holiday"}), ["E3", "E5"])
        self.assertEqual(self.query({"subject": "budget"}), [])
        self.assertEqual(self.query({"body": "budget"}), ["E2"])
        self.assertEqual(self.query({"body": "kickoff"}), [])
        self.assertEqual(self.query({"body": "budget.xlsx"}), [])

    def test_header_exists(self) -> None:
        """
        header with only a name finds the Emails that have that header
        field, whatever the case of the name.
        """
        self.assertEqual(self.query({"header": ["X-Priority"]}), ["E4"])
        self.assertEqual(self.query({"header": ["x-priority"]}), ["E4"])
        self.assertEqual(self.query({"header": ["Date"]}), ["E1", "E2", "E3", "E4", "E6"])
        self.assertEqual(self.query({"header": ["X-Missing"]}), [])

    def test_header_value(self) -> None:
        """
        header with a value finds the Emails with a field of that name whose
        decoded value contains it, case-insensitively.
        """
        self.assertEqual(self.query({"header": ["X-Priority", "1"]}), ["E4"])
        self.assertEqual(self.query({"header": ["X-Priority", "2"]}), [])
        self.assertEqual(self.query({"header": ["Subject", "PHOTOS"]}), ["E3", "E5"])
        self.assertEqual(self.query({"header": ["From", "émile"]}), ["E6"])
        self.assertEqual(self.query({"header": ["To", "photos"]}), [])


class OperatorTests(CorpusTestCase):
    def test_and(self) -> None:
        """
        AND needs every condition; so do several properties in one
        FilterCondition.
        """
        both = {"operator": "AND", "conditions": [{"inMailbox": self.inbox}, {"hasKeyword": "$seen"}]}
        self.assertEqual(self.query(both), ["E1", "E2"])
        self.assertEqual(self.query({"inMailbox": self.inbox, "hasKeyword": "$seen"}), ["E1", "E2"])

    def test_or(self) -> None:
        """
        OR needs one of the conditions.
        """
        either = {"operator": "OR", "conditions": [{"inMailbox": self.archive}, {"hasKeyword": "$draft"}]}
        self.assertEqual(self.query(either), ["E2", "E3", "E5"])

    def test_not(self) -> None:
        """
        NOT needs none of the conditions.
        """
        neither = {"operator": "NOT", "conditions": [{"inMailbox": self.inbox}, {"hasKeyword": "$draft"}]}
        self.assertEqual(self.query(neither), ["E3", "E4"])

    def test_nesting(self) -> None:
        """
        Operators nest: unread Inbox Emails, or anything about the budget
        that is not in the Inbox.
        """
        nested = {
            "operator": "OR",
            "conditions": [
                {"operator": "AND", "conditions": [
                    {"inMailbox": self.inbox},
                    {"operator": "NOT", "conditions": [{"hasKeyword": "$seen"}]},
                ]},
                {"operator": "AND", "conditions": [
                    {"text": "holiday"},
                    {"operator": "NOT", "conditions": [{"inMailbox": self.inbox}]},
                ]},
            ],
        }
        self.assertEqual(self.query(nested), ["E3", "E5", "E6"])

    def test_text_under_operators(self) -> None:
        """
        Text conditions combine with operators like any other condition,
        inside and outside the top level.
        """
        self.assertEqual(
            self.query({"operator": "OR", "conditions": [{"text": "beach"}, {"text": "invoice"}]}),
            ["E3", "E4", "E5"],
        )
        self.assertEqual(
            self.query({"operator": "AND", "conditions": [{"text": "beach"}, {"from": "alice"}]}), ["E5"]
        )
        self.assertEqual(self.query({"operator": "NOT", "conditions": [{"text": "beach"}]}), ["E1", "E2", "E4", "E6"])
        self.assertEqual(self.query({"text": "beach", "inMailbox": self.inbox}), ["E5"])

    def test_empty_operators(self) -> None:
        """
        AND and NOT of no conditions are true; OR of none is false.
        """
        self.assertEqual(self.query({"operator": "AND", "conditions": []}), ALL)
        self.assertEqual(self.query({"operator": "NOT", "conditions": []}), ALL)
        self.assertEqual(self.query({"operator": "OR", "conditions": []}), [])


class SortTests(CorpusTestCase):
    def get(self, property: str) -> dict[str, Any]:
        found = self.call("Email/get", {"ids": list(self.ids.values()), "properties": [property]})["list"]
        return {self.names[item["id"]]: item[property] for item in found}

    def test_received_at(self) -> None:
        """
        receivedAt sorts by the time the Email arrived, both ways; without
        a sort the newest come first.
        """
        self.assertEqual(self.query(sort=[{"property": "receivedAt", "isAscending": True}]), ALL)
        self.assertEqual(self.query(sort=[{"property": "receivedAt", "isAscending": False}]), ALL[::-1])
        self.assertEqual(self.query(sort=[]), ALL[::-1])
        response = self.call("Email/query", {})
        self.assertEqual([self.names[i] for i in response["ids"]], ALL[::-1])

    def test_size(self) -> None:
        """
        size sorts by the size Email/get reports, both ways.
        """
        sizes = self.get("size")
        expected = sorted(sizes, key=lambda name: sizes[name])
        self.assertEqual(len(set(sizes.values())), 6)
        self.assertEqual(self.query(sort=[{"property": "size"}]), expected)
        self.assertEqual(self.query(sort=[{"property": "size", "isAscending": False}]), expected[::-1])

    def test_sent_at(self) -> None:
        """
        sentAt sorts by the instant of the Date header field (E1's 10:00
        +0200 is before E2's 09:00 UTC); E5 has none and comes first.
        """
        self.assertEqual(self.query(sort=[{"property": "sentAt"}]), ["E5", "E3", "E1", "E2", "E4", "E6"])
        self.assertEqual(
            self.query(sort=[{"property": "sentAt", "isAscending": False}]), ["E6", "E4", "E2", "E1", "E3", "E5"]
        )

    def test_from(self) -> None:
        """
        from sorts by the first From name, or its address when it has no
        name, by default in i;unicode-casemap: "Émile" among the E's.
        """
        self.assertEqual(self.query(sort=[{"property": "from"}]), ["E1", "E5", "E4", "E2", "E6", "E3"])
        self.assertEqual(
            self.query(sort=[{"property": "from", "collation": "i;unicode-casemap"}]),
            ["E1", "E5", "E4", "E2", "E6", "E3"],
        )
        self.assertEqual(
            self.query(sort=[{"property": "from", "isAscending": False}]), ["E3", "E6", "E2", "E4", "E5", "E1"]
        )

    def test_from_ascii_casemap(self) -> None:
        """
        Under i;ascii-casemap only ASCII letters fold, so "Émile" sorts
        after every ASCII name.
        """
        self.assertEqual(
            self.query(sort=[{"property": "from", "collation": "i;ascii-casemap"}]),
            ["E1", "E5", "E4", "E2", "E3", "E6"],
        )

    def test_to(self) -> None:
        """
        to sorts by the first To name or address.
        """
        self.assertEqual(self.query(sort=[{"property": "to"}]), ["E4", "E2", "E3", "E1", "E6", "E5"])

    def test_subject(self) -> None:
        """
        subject sorts by the base subject (RFC 5256: "Re:" and "[list]"
        dropped), case-insensitively; later comparators break ties.
        """
        self.assertEqual(
            self.query(sort=[{"property": "subject"}, {"property": "receivedAt"}]),
            ["E6", "E3", "E5", "E4", "E1", "E2"],
        )
        self.assertEqual(
            self.query(sort=[{"property": "subject", "isAscending": False}, {"property": "receivedAt"}]),
            ["E1", "E2", "E4", "E3", "E5", "E6"],
        )
        self.assertEqual(
            self.query(sort=[{"property": "subject", "collation": "i;ascii-casemap"}, {"property": "receivedAt"}]),
            ["E6", "E3", "E5", "E4", "E1", "E2"],
        )

    def test_subject_ascii_numeric(self) -> None:
        """
        Under i;ascii-numeric a subject starting with a number comes first;
        the others are equal, so the next comparator decides.
        """
        self.assertEqual(
            self.query(sort=[{"property": "subject", "collation": "i;ascii-numeric"}, {"property": "receivedAt"}]),
            ["E6", "E1", "E2", "E3", "E4", "E5"],
        )

    def test_has_keyword(self) -> None:
        """
        hasKeyword sorts false before true (ascending).
        """
        self.assertEqual(
            self.query(sort=[{"property": "hasKeyword", "keyword": "$flagged", "isAscending": False},
                             {"property": "receivedAt"}]),
            ["E2", "E1", "E3", "E4", "E5", "E6"],
        )
        self.assertEqual(
            self.query(sort=[{"property": "hasKeyword", "keyword": "$seen"}, {"property": "receivedAt"}]),
            ["E3", "E5", "E6", "E1", "E2", "E4"],
        )

    def test_some_in_thread_have_keyword(self) -> None:
        """
        someInThreadHaveKeyword is true for every Email of a Thread where
        one has the keyword.
        """
        self.assertEqual(
            self.query(sort=[{"property": "someInThreadHaveKeyword", "keyword": "$flagged", "isAscending": False},
                             {"property": "receivedAt"}]),
            ["E1", "E2", "E3", "E4", "E5", "E6"],
        )
        self.assertEqual(
            self.query(sort=[{"property": "someInThreadHaveKeyword", "keyword": "$draft", "isAscending": False},
                             {"property": "receivedAt", "isAscending": False}]),
            ["E5", "E3", "E6", "E4", "E2", "E1"],
        )

    def test_all_in_thread_have_keyword(self) -> None:
        """
        allInThreadHaveKeyword is true only where the whole Thread has it.
        """
        self.assertEqual(
            self.query(sort=[{"property": "allInThreadHaveKeyword", "keyword": "$seen", "isAscending": False},
                             {"property": "receivedAt"}]),
            ["E1", "E2", "E4", "E3", "E5", "E6"],
        )

    def test_sort_within_filter(self) -> None:
        """
        Sorting applies to the filtered Emails, whichever table the
        statement reads first (the Mailbox index, the text index).
        """
        self.assertEqual(
            self.query({"inMailbox": self.inbox}, [{"property": "from"}]), ["E1", "E5", "E2", "E6"]
        )
        self.assertEqual(self.query({"text": "alice"}, [{"property": "to"}]), ["E4", "E2", "E3", "E1", "E5"])
        self.assertEqual(
            self.query({"text": "alice"}, [{"property": "receivedAt", "isAscending": False}]),
            ["E5", "E4", "E3", "E2", "E1"],
        )

    def test_stable(self) -> None:
        """
        Emails that compare equal keep one order from call to call.
        """
        sort = [{"property": "hasKeyword", "keyword": "$seen"}]
        first = self.query(sort=sort)
        for _ in range(3):
            self.assertEqual(self.query(sort=sort), first)


class CollapseThreadsTests(CorpusTestCase):
    def test_collapse(self) -> None:
        """
        With collapseThreads each Thread appears once, at the place of its
        first Email in the sorted result.
        """
        self.assertEqual(
            self.query(sort=[{"property": "receivedAt", "isAscending": False}], collapseThreads=True),
            ["E6", "E5", "E4", "E2"],
        )
        self.assertEqual(self.query(collapseThreads=True), ["E1", "E3", "E4", "E6"])

    def test_collapse_after_filter(self) -> None:
        """
        Collapsing comes after filtering: in Archive, E2 stands for its
        Thread although E1 is older; in the Inbox, E3's Thread is E5.
        """
        self.assertEqual(self.query({"inMailbox": self.archive}, collapseThreads=True), ["E2", "E3"])
        self.assertEqual(self.query({"inMailbox": self.inbox}, collapseThreads=True), ["E1", "E5", "E6"])
        self.assertEqual(
            self.query({"inMailbox": self.inbox}, [{"property": "receivedAt", "isAscending": False}],
                       collapseThreads=True),
            ["E6", "E5", "E2"],
        )

    def test_collapse_total(self) -> None:
        """
        The total of a collapsed query counts Threads: for one inMailbox it
        is the Mailbox's totalThreads.
        """
        response = self.call("Email/query", {"filter": {"inMailbox": self.inbox}, "collapseThreads": True,
                                             "calculateTotal": True})
        self.assertEqual(response["total"], 3)
        [mailbox] = self.call("Mailbox/get", {"ids": [self.inbox]})["list"]
        self.assertEqual(mailbox["totalThreads"], 3)
        response = self.call("Email/query", {"filter": {"hasKeyword": "$seen"}, "collapseThreads": True,
                                             "calculateTotal": True})
        self.assertEqual(response["total"], 2)

    def test_collapse_window(self) -> None:
        """
        Positions count Threads, not Emails.
        """
        self.assertEqual(self.query(collapseThreads=True, position=1, limit=2), ["E3", "E4"])
        self.assertEqual(self.query(collapseThreads=True, position=-1), ["E6"])


class WindowTests(CorpusTestCase):
    def window(self, **arguments: Any) -> tuple[list[str], int]:
        response = self.call("Email/query", {"sort": [{"property": "receivedAt"}], **arguments})
        return [self.names[i] for i in response["ids"]], response["position"]

    def test_position_and_limit(self) -> None:
        """
        position and limit pick a slice of the result.
        """
        self.assertEqual(self.window(position=2, limit=2), (["E3", "E4"], 2))
        self.assertEqual(self.window(position=0, limit=0), ([], 0))

    def test_negative_position(self) -> None:
        """
        A negative position counts from the end, clamped at 0.
        """
        self.assertEqual(self.window(position=-2), (["E5", "E6"], 4))
        self.assertEqual(self.window(position=-2, limit=1), (["E5"], 4))
        self.assertEqual(self.window(position=-10, limit=2), (["E1", "E2"], 0))

    def test_position_past_the_end(self) -> None:
        """
        A position at or past the end gives no ids and is not an error.
        """
        self.assertEqual(self.window(position=6), ([], 6))
        self.assertEqual(self.window(position=60), ([], 6))

    def test_anchor(self) -> None:
        """
        anchor and anchorOffset start the window relative to an Email;
        position is then ignored, and a negative result is clamped to 0.
        """
        anchor = self.ids["E3"]
        self.assertEqual(self.window(anchor=anchor, limit=2), (["E3", "E4"], 2))
        self.assertEqual(self.window(anchor=anchor, anchorOffset=-1, limit=2), (["E2", "E3"], 1))
        self.assertEqual(self.window(anchor=anchor, anchorOffset=2, position=0), (["E5", "E6"], 4))
        self.assertEqual(self.window(anchor=self.ids["E1"], anchorOffset=-5, limit=1), (["E1"], 0))
        self.assertEqual(self.window(anchor=self.ids["E6"], anchorOffset=3), ([], 6))

    def test_anchor_offset_without_anchor(self) -> None:
        """
        anchorOffset without anchor is ignored.
        """
        self.assertEqual(self.window(anchorOffset=3, limit=1), (["E1"], 0))

    def test_anchor_not_found(self) -> None:
        """
        An anchor that is not in the results (filtered out, collapsed
        away, or no such Email) is anchorNotFound.
        """
        for arguments in (
            {"anchor": self.ids["E4"], "filter": {"inMailbox": self.inbox}},
            {"anchor": self.ids["E1"], "collapseThreads": True},
            {"anchor": "Mnosuchemail"},
        ):
            error = self.query_error(**arguments)
            self.assertEqual(error["type"], "anchorNotFound", arguments)

    def test_total(self) -> None:
        """
        total is there only when asked for, and counts the whole result.
        """
        response = self.call("Email/query", {"limit": 1})
        self.assertNotIn("total", response)
        response = self.call("Email/query", {"limit": 1, "calculateTotal": True})
        self.assertEqual(response["total"], 6)
        response = self.call("Email/query", {"filter": {"inMailbox": self.inbox}, "calculateTotal": True})
        self.assertEqual(response["total"], 4)
        response = self.call("Email/query", {"filter": {"text": "alice"}, "calculateTotal": True, "limit": 1})
        self.assertEqual(response["total"], 5)

    def test_response(self) -> None:
        """
        The response has the account, queryState, canCalculateChanges and
        the window; limit only when the server chose it (a null limit is
        the maximum).
        """
        response = self.call("Email/query", {"limit": 2})
        self.assertEqual(
            set(response), {"accountId", "queryState", "canCalculateChanges", "position", "ids"}
        )
        self.assertEqual(response["accountId"], self.alice)
        self.assertTrue(response["canCalculateChanges"])
        response = self.call("Email/query", {})
        self.assertEqual(response["limit"], self.env.config.query_max_results)


class LimitTests(CorpusTestCase):
    config = {"query_max_results": 4}

    def test_limit_clamped(self) -> None:
        """
        A limit above query-max-results, or none, is clamped to it and the
        limit used is returned.
        """
        response = self.call("Email/query", {"limit": 10})
        self.assertEqual((len(response["ids"]), response["limit"]), (4, 4))
        response = self.call("Email/query", {"limit": None})
        self.assertEqual((len(response["ids"]), response["limit"]), (4, 4))
        response = self.call("Email/query", {"limit": 3})
        self.assertEqual(len(response["ids"]), 3)
        self.assertNotIn("limit", response)


class QueryStateTests(CorpusTestCase):
    def test_query_state_is_email_state(self) -> None:
        """
        The queryState is the Email state: it changes with any Email
        change (a keyword here changes allInThreadHaveKeyword results of
        the other Email of the Thread) and not with a Mailbox rename.
        """
        before = self.call("Email/query", {})["queryState"]
        self.assertEqual(before, self.state("Email"))
        self.call("Mailbox/set", {"update": {self.archive: {"name": "Old"}}})
        self.assertEqual(self.call("Email/query", {})["queryState"], before)
        self.call("Email/set", {"update": {self.ids["E3"]: {"keywords/$seen": True}}})
        after = self.call("Email/query", {})["queryState"]
        self.assertNotEqual(after, before)
        self.assertEqual(after, self.state("Email"))


class ErrorTests(CorpusTestCase):
    def assertError(self, kind: str, **arguments: Any) -> None:
        error = self.query_error(**arguments)
        self.assertEqual(error["type"], kind, arguments)

    def test_unsupported_filter(self) -> None:
        """
        A condition or operator this server does not know is
        unsupportedFilter; so is a filter too deep to run.
        """
        self.assertError("unsupportedFilter", filter={"inThread": "T1"})
        self.assertError("unsupportedFilter", filter={"operator": "XOR", "conditions": []})
        deep: dict[str, Any] = {"hasKeyword": "$seen"}
        for _ in range(20):
            deep = {"operator": "NOT", "conditions": [deep]}
        self.assertError("unsupportedFilter", filter=deep)
        wide = {"operator": "OR", "conditions": [{"hasKeyword": f"k{n}"} for n in range(300)]}
        self.assertError("unsupportedFilter", filter=wide)

    def test_invalid_filter_values(self) -> None:
        """
        Filter values of the wrong type are invalidArguments.
        """
        for filter in (
            [],
            {"inMailbox": 5},
            {"inMailboxOtherThan": "m1"},
            {"before": "yesterday"},
            {"after": "2023-11-14T22:13:20+01:00"},
            {"minSize": -1},
            {"maxSize": "big"},
            {"hasKeyword": "bad(keyword"},
            {"allInThreadHaveKeyword": 1},
            {"hasAttachment": "yes"},
            {"text": 5},
            {"header": []},
            {"header": ["a", "b", "c"]},
            {"header": [""]},
            {"operator": "AND"},
            {"operator": "AND", "conditions": [5]},
            {"operator": 1, "conditions": []},
            {"operator": "AND", "conditions": [], "extra": 1},
        ):
            self.assertError("invalidArguments", filter=filter)

    def test_unsupported_sort(self) -> None:
        """
        A sort property or collation this server does not know is
        unsupportedSort.
        """
        self.assertError("unsupportedSort", sort=[{"property": "id"}])
        self.assertError("unsupportedSort", sort=[{"property": "subject", "collation": "i;octet"}])

    def test_invalid_sort(self) -> None:
        """
        Malformed comparators are invalidArguments: keyword sorts need a
        keyword, isAscending is a Boolean, sort is an array.
        """
        self.assertError("invalidArguments", sort=[{"property": "hasKeyword"}])
        self.assertError("invalidArguments", sort=[{"property": "someInThreadHaveKeyword", "keyword": "a b"}])
        self.assertError("invalidArguments", sort=[{"property": "size", "isAscending": "yes"}])
        self.assertError("invalidArguments", sort={"property": "size"})
        self.assertError("invalidArguments", sort=[{"isAscending": True}])

    def test_invalid_window(self) -> None:
        """
        A negative limit, a non-integer position and unknown arguments are
        invalidArguments.
        """
        self.assertError("invalidArguments", limit=-1)
        self.assertError("invalidArguments", position="1")
        self.assertError("invalidArguments", anchor=5)
        self.assertError("invalidArguments", calculateTotal="yes")
        self.assertError("invalidArguments", collapseThreads=1)
        self.assertError("invalidArguments", sortAsTree=True)

    def test_unknown_account(self) -> None:
        """
        An account that is not the principal's is accountNotFound.
        """
        self.assertError("accountNotFound", accountId="anosuchaccount")

    def test_other_accounts_emails(self) -> None:
        """
        A query sees only its account's Emails, text search included.
        """
        bob = self.add_account("bob")
        self.deliver(message("Project kickoff for bob", "b1@x", body="beach"), who="bob")
        self.assertEqual(self.query({"text": "beach"}), ["E3", "E5"])
        response = self.call("Email/query", {"filter": {"text": "beach"}}, who="bob")
        self.assertEqual(len(response["ids"]), 1)
        self.assertEqual(response["accountId"], bob)


class ParseTextTests(MailTestCase):
    def test_words(self) -> None:
        """
        White space separates words; each is a prefix term.
        """
        self.assertEqual(parse_text(" foo  bar\tbaz "), (Term("foo"), Term("bar"), Term("baz")))

    def test_phrases(self) -> None:
        """
        Matched single or double quotes make a phrase; inside, a backslash
        escapes quotes and backslashes.
        """
        self.assertEqual(parse_text('a "b c" d'), (Term("a"), Term("b c", True), Term("d")))
        self.assertEqual(parse_text("'b c'"), (Term("b c", True),))
        self.assertEqual(parse_text(r'"say \"hi\" \\ now"'), (Term('say "hi" \\ now', True),))
        self.assertEqual(parse_text("\"it's\""), (Term("it's", True),))

    def test_unmatched_quotes(self) -> None:
        """
        A quote that is not closed, or inside a word, is part of the word.
        """
        self.assertEqual(parse_text('"open'), (Term('"open'),))
        self.assertEqual(parse_text("don't stop"), (Term("don't"), Term("stop")))

    def test_nul(self) -> None:
        """
        A NUL separates words, in phrases too.
        """
        self.assertEqual(parse_text("a\x00b"), (Term("a"), Term("b")))
        self.assertEqual(parse_text('"a\x00b"'), (Term("a b", True),))

    def test_no_words(self) -> None:
        """
        Terms without letters or digits are dropped.
        """
        self.assertEqual(parse_text(' - "" @ '), ())


# ParseTextTests is about the parse alone: no database.
pg.add_postgresql_variants(globals(), CollapseThreadsTests, ErrorTests, FilterTests, LimitTests, OperatorTests, QueryStateTests, SortTests, WindowTests)
