"""
Tests for L{bench.lmtp_ingest}, the LMTP delivery benchmark.
"""

import contextlib
import io
import os

from twisted.trial.unittest import SynchronousTestCase

from bench import lmtp_ingest


class LMTPIngestTests(SynchronousTestCase):
    def test_run(self):
        """
        A run delivers every message to a fresh jmapd over real LMTP
        connections (each 250 checked, the stored count compared), and
        reports its rate, the server's CPU per message and how many
        commits the messages took, which never exceeds their number.
        """
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            rate = lmtp_ingest.run(messages=12, connections=2, size=600)
        self.assertGreater(rate, 0)
        line = out.getvalue()
        self.assertIn("jmapd: 12 messages of 600 octets over 2 LMTP connections", line)
        self.assertIn("ms per message", line)
        commits = int(line.split(" commits (")[0].rsplit(" ", 1)[1])
        self.assertTrue(1 <= commits <= 12, line)

    def test_read_groups(self):
        """
        The server's count of commits and messages is read back from its
        data directory; a missing or unreadable file gives C{None}.
        """
        data = self.mktemp()
        os.makedirs(data)
        self.assertIsNone(lmtp_ingest.read_groups(data))
        path = os.path.join(data, lmtp_ingest.GROUPS_FILE)
        with open(path, "w") as f:
            f.write("garbage\n")
        self.assertIsNone(lmtp_ingest.read_groups(data))
        with open(path, "w") as f:
            f.write("3 12\n")
        self.assertEqual(lmtp_ingest.read_groups(data), (3, 12))
