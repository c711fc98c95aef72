"""
Tests for L{jmapd.storage.ids}.
"""

import re
import time

from twisted.trial.unittest import SynchronousTestCase

from jmapd.storage.ids import new_id, ordered_id

#: RFC 8620 section 1.2: the URL-safe base64 alphabet, 1 to 255 characters.
JMAP_ID = re.compile(r"[A-Za-z0-9_-]{1,255}")


class IdTests(SynchronousTestCase):
    def test_random(self):
        """
        A random id is its prefix and 12 lower-case base32 characters, a
        valid JMAP id, different every time.
        """
        ids = {new_id("a") for _ in range(1000)}
        self.assertEqual(len(ids), 1000)
        for value in ids:
            self.assertTrue(re.fullmatch(r"a[a-z2-7]{12}", value), value)

    def test_ordered_by_time(self):
        """
        An ordered id sorts after every id made at an earlier millisecond,
        from 2020 for a thousand years, and is a valid JMAP id of fixed
        length.
        """
        moments = [1_577_836_800.0, 1_577_836_800.001, 1_700_000_000.5, 1_700_000_000.501, 4_000_000_000.0, 3e10]
        ids = [ordered_id("M", moment) for moment in moments]
        self.assertEqual(sorted(ids), ids)
        for value in ids:
            self.assertTrue(JMAP_ID.fullmatch(value), value)
            self.assertEqual(len(value), 18)
            self.assertTrue(value.startswith("M"))

    def test_ordered_unique(self):
        """
        Ordered ids made in the same millisecond differ (40 random bits).
        """
        ids = {ordered_id("M", 1_700_000_000.0) for _ in range(1000)}
        self.assertEqual(len(ids), 1000)

    def test_ordered_by_clock(self):
        """
        Without a time, the clock's is used: ids made one after the other
        across milliseconds sort in the order they were made.
        """
        first = ordered_id("T")
        later = ordered_id("T", time.time() + 0.002)
        self.assertLess(first, later)
