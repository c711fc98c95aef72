"""
Tests for L{bench.corpus}: the benchmark corpus is the same bytes for the
same seed, and has the shape the workloads rely on.
"""

from __future__ import annotations

import email
import hashlib
from email import policy

from twisted.trial.unittest import TestCase

from bench.corpus import SEARCH_WORD, generate


def digest(messages: list) -> str:
    h = hashlib.sha256()
    for m in messages:
        h.update(m.raw)
        h.update(repr((m.received_at, m.role, m.keywords)).encode())
    return h.hexdigest()


class CorpusTests(TestCase):
    def test_same_seed_same_bytes(self) -> None:
        """
        Two corpora from the same seed are identical, byte for byte, with
        the same dates, mailboxes and keywords.
        """
        self.assertEqual(digest(list(generate(200, seed=3))), digest(list(generate(200, seed=3))))

    def test_other_seed_other_bytes(self) -> None:
        """
        Another seed gives another corpus.
        """
        self.assertNotEqual(digest(list(generate(50, seed=3))), digest(list(generate(50, seed=4))))

    def test_threads(self) -> None:
        """
        About 30 % of the messages reply to an earlier one of the corpus,
        with In-Reply-To and References naming it.
        """
        messages = list(generate(1000))
        ids = {m.message_id for m in messages}
        replies = [m for m in messages if m.in_reply_to is not None]
        self.assertTrue(250 <= len(replies) <= 350, len(replies))
        for m in replies:
            self.assertIn(m.in_reply_to, ids)
            parsed = email.message_from_bytes(m.raw, policy=policy.default)
            self.assertEqual(parsed["In-Reply-To"], m.in_reply_to)
            self.assertTrue(parsed["References"].endswith(m.in_reply_to))
            self.assertTrue(parsed["Subject"].startswith("Re: "))

    def test_mime_shapes(self) -> None:
        """
        The corpus has plain messages, multipart/alternative with an HTML
        part, and multipart/mixed with attachments, and every message
        parses without defects.
        """
        kinds = set()
        for m in generate(300):
            parsed = email.message_from_bytes(m.raw, policy=policy.default)
            for part in parsed.walk():
                self.assertEqual(list(part.defects), [])
            kinds.add(parsed.get_content_type())
            if m.has_attachment:
                self.assertTrue(any(p.get_content_disposition() == "attachment" for p in parsed.walk()))
        self.assertEqual(kinds, {"text/plain", "multipart/alternative", "multipart/mixed"})

    def test_dates_span_a_year_in_order(self) -> None:
        """
        Dates are in order (a reply is newer than what it replies to) and
        spread over 2024.
        """
        dates = [m.received_at for m in generate(500)]
        self.assertEqual(dates, sorted(dates))
        self.assertTrue(dates[0].startswith("2024-01"))
        self.assertTrue(dates[-1].startswith("2024-12"))

    def test_search_word_has_hits(self) -> None:
        """
        The search word is in some messages but not all, and a message
        said to contain it has it in its text.
        """
        messages = list(generate(300))
        hits = [m for m in messages if SEARCH_WORD in m.words]
        self.assertTrue(0 < len(hits) < len(messages))
        for m in hits[:20]:
            self.assertIn(SEARCH_WORD, m.raw.decode().lower())
