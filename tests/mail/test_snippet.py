"""
Tests for SearchSnippet/get (RFC 8621 section 5) in L{jmapd.mail.snippet}.
"""

from __future__ import annotations

from typing import Any

from jmapd.mail.snippet import MAX_PREVIEW_OCTETS, render
from tests import pg
from tests.mail.test_email_support import MailTestCase, message

HTML = (
    "From: Zoë <zoe@example.com>\r\n"
    "To: alice@example.com\r\n"
    "Subject: Beach & <sun>\r\n"
    "Content-Type: text/html; charset=utf-8\r\n"
    "\r\n"
    "<p>The beach was great: 3 < 4 & all that.</p>\r\n"
).encode()


class SnippetTests(MailTestCase):
    def setUp(self) -> None:
        super().setUp()
        self.plain = self.deliver(
            message("The Foosball competition", "f@x", body="This year the foosball competition is in the Café.\r\n")
        ).id
        self.html = self.deliver(HTML).id
        self.other = self.deliver(message("Lunch", "l@x", body="Nothing to see.\r\n")).id
        words = " ".join(f"word{n}" for n in range(200))
        self.long = self.deliver(message("Long", "long@x", body=f"{words} target {words}\r\n")).id

    def snippets(self, filter: Any, ids: list[str]) -> dict[str, Any]:
        response = self.call("SearchSnippet/get", {"filter": filter, "emailIds": ids})
        return {item["emailId"]: (item["subject"], item["preview"]) for item in response["list"]}

    def test_subject_and_preview(self) -> None:
        """
        Matched words are wrapped in <mark> in the subject and in a part of
        the body; prefixes, case and accents match as in Email/query.
        """
        found = self.snippets({"text": "foo cafe"}, [self.plain])
        self.assertEqual(
            found[self.plain],
            ("The <mark>Foosball</mark> competition",
             "This year the <mark>foosball</mark> competition is in the <mark>Café</mark>."),
        )

    def test_escaping(self) -> None:
        """
        &, < and > are escaped as HTML entities, in the subject and the
        preview (HTML bodies are searched as the text a reader sees).
        """
        found = self.snippets({"text": "beach"}, [self.html])
        self.assertEqual(
            found[self.html],
            ("<mark>Beach</mark> &amp; &lt;sun&gt;", "The <mark>beach</mark> was great: 3 &lt; 4 &amp; all that."),
        )

    def test_no_match(self) -> None:
        """
        An Email where the filter's text matches nothing has null subject
        and preview; so does a part of the Email that does not match.
        """
        found = self.snippets({"text": "foosball"}, [self.other, self.html])
        self.assertEqual(found, {self.other: (None, None), self.html: (None, None)})
        found = self.snippets({"subject": "foosball"}, [self.plain])
        self.assertEqual(found[self.plain], ("The <mark>Foosball</mark> competition", None))
        found = self.snippets({"body": "foosball"}, [self.plain])
        self.assertEqual(found[self.plain][0], None)
        self.assertIn("<mark>foosball</mark>", found[self.plain][1])

    def test_no_text_in_filter(self) -> None:
        """
        Without text conditions (or with none at all) there is nothing to
        highlight.
        """
        self.assertEqual(self.snippets({"hasKeyword": "$seen"}, [self.plain]), {self.plain: (None, None)})
        self.assertEqual(self.snippets(None, [self.plain]), {self.plain: (None, None)})

    def test_negated_text_not_marked(self) -> None:
        """
        Text under NOT is what the Emails do not contain: not highlighted.
        """
        filter = {"operator": "AND", "conditions": [
            {"text": "competition"},
            {"operator": "NOT", "conditions": [{"text": "foosball"}]},
        ]}
        subject, preview = self.snippets(filter, [self.plain])[self.plain]
        self.assertEqual(subject, "The Foosball <mark>competition</mark>")
        self.assertNotIn("<mark>foosball</mark>", preview)

    def test_phrase(self) -> None:
        """
        A phrase is marked as a whole.
        """
        subject, _ = self.snippets({"text": '"foosball competition"'}, [self.plain])[self.plain]
        self.assertEqual(subject, "The <mark>Foosball competition</mark>")

    def test_preview_size(self) -> None:
        """
        The preview is a part of the body around the match, at most 255
        octets, with an ellipsis where it is cut.
        """
        _, preview = self.snippets({"body": "target"}, [self.long])[self.long]
        self.assertIn("<mark>target</mark>", preview)
        self.assertLessEqual(len(preview.encode("utf-8")), MAX_PREVIEW_OCTETS)
        self.assertTrue(preview.startswith("\u2026") and preview.endswith("\u2026"), preview)

    def test_not_found(self) -> None:
        """
        Ids that are not Emails of the account are in notFound, null when
        every id was found.
        """
        response = self.call("SearchSnippet/get", {"filter": {"text": "x"}, "emailIds": [self.plain, "Mnope"]})
        self.assertEqual([item["emailId"] for item in response["list"]], [self.plain])
        self.assertEqual(response["notFound"], ["Mnope"])
        response = self.call("SearchSnippet/get", {"filter": {"text": "x"}, "emailIds": [self.plain]})
        self.assertIsNone(response["notFound"])
        self.assertEqual(response["accountId"], self.alice)

    def test_errors(self) -> None:
        """
        emailIds is required; the filter is checked as Email/query checks
        it; too many ids is requestTooLarge.
        """
        self.assertEqual(self.call_error("SearchSnippet/get", {"filter": None})["type"], "invalidArguments")
        error = self.call_error("SearchSnippet/get", {"filter": {"nope": 1}, "emailIds": []})
        self.assertEqual(error["type"], "unsupportedFilter")
        error = self.call_error("SearchSnippet/get", {"filter": {"text": 1}, "emailIds": []})
        self.assertEqual(error["type"], "invalidArguments")
        many = [f"M{n}" for n in range(self.env.config.max_objects_in_get + 1)]
        error = self.call_error("SearchSnippet/get", {"filter": None, "emailIds": many})
        self.assertEqual(error["type"], "requestTooLarge")


class RenderTests(MailTestCase):
    def test_render_escapes_and_marks(self) -> None:
        """
        Text between the marks becomes <mark>; everything is escaped.
        """
        self.assertEqual(render("a<\ue0f0b&\ue0f1>"), "a&lt;<mark>b&amp;</mark>&gt;")

    def test_render_cuts_between_characters(self) -> None:
        """
        A cut never splits a character, an entity or a mark.
        """
        self.assertEqual(render("ab&cd", 5), "ab")
        self.assertEqual(render("\ue0f0abc\ue0f1", 14), "<mark>a</mark>")
        self.assertEqual(render("éé", 3), "é")


# RenderTests is about render() alone: no database.
pg.add_postgresql_variants(globals(), SnippetTests)
