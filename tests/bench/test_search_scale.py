"""
Tests for L{bench.search_scale}: the cost of the list view and searches
against the account's size, as a table and a plot.
"""

from __future__ import annotations

import os

from twisted.trial.unittest import TestCase

from bench import search_scale


class SearchScaleTests(TestCase):
    def test_tableAndPlot(self) -> None:
        """
        A run over two small accounts prints one row per request with a
        cell for each size and their ratio, and with C{--plot} writes a
        PNG of the costs against the size.
        """
        lines: list[str] = []
        plot = os.path.abspath(self.mktemp()) + ".png"
        status = search_scale.main(
            ["--sizes", "20,40", "--repeat", "2", "--rounds", "1", "--plot", plot], out=lines.append
        )
        self.assertEqual(status, 0)
        self.assertTrue(lines[0].startswith("20 messages: built in "))
        self.assertTrue(lines[1].startswith("40 messages: built in "))
        rows = [line for line in lines if line.startswith("| ") and not line.startswith("| workload")]
        names = [row.split(" | ")[0][2:] for row in rows]
        self.assertIn("list view", names)
        self.assertIn("text search 'milestone'", names)
        for row in rows:
            self.assertEqual(len(row.strip("|").split(" | ")), 4, row)
        self.assertEqual(lines[-1], f"plot: {plot}")
        with open(plot, "rb") as f:
            self.assertEqual(f.read(8), b"\x89PNG\r\n\x1a\n")
