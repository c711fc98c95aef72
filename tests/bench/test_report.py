"""
Tests for L{bench.report}: percentiles, the ratio to the first target, and
what the table says for skipped and failed cells.
"""

from __future__ import annotations

import math

from twisted.trial.unittest import TestCase

from bench.load import Cell
from bench.report import (
    FAILED,
    OK,
    SKIPPED,
    ImportRow,
    Row,
    ceiling_fractions,
    markdown,
    percentile,
    ratio,
    ratios,
    summarize,
)


class PercentileTests(TestCase):
    def test_nearest_rank(self) -> None:
        """
        The p-th percentile is the smallest value with at least p of the
        values at or below it.
        """
        values = list(range(1, 101))
        self.assertEqual(percentile(values, 0.50), 50)
        self.assertEqual(percentile(values, 0.99), 99)
        self.assertEqual(percentile(values, 1.0), 100)
        self.assertEqual(percentile([7.0], 0.99), 7.0)

    def test_unsorted(self) -> None:
        """
        The values need not be sorted.
        """
        self.assertEqual(percentile([5, 1, 4, 2, 3], 0.5), 3)

    def test_empty(self) -> None:
        """
        No values have no percentile (NaN, shown as '-').
        """
        self.assertTrue(math.isnan(percentile([], 0.5)))


class SummarizeTests(TestCase):
    def test_rates_and_latencies(self) -> None:
        """
        req/s is right answers over seconds; latencies are reported in ms.
        """
        cell = Cell(requests=400, seconds=2.0, client_cpu=0.5, latencies=[0.001] * 300 + [0.010] * 100)
        row = summarize("core_echo", 4, "jmapd", cell)
        self.assertEqual(row.status, OK)
        self.assertEqual(row.rps, 200.0)
        self.assertAlmostEqual(row.p50_ms, 1.0)
        self.assertAlmostEqual(row.p99_ms, 10.0)
        self.assertAlmostEqual(row.client_cpu, 0.25)

    def test_any_wrong_answer_fails_the_cell(self) -> None:
        """
        One wrong answer among many right ones makes the cell a failure
        with no rate: a fast error is not a result.
        """
        cell = Cell(requests=1000, errors=1, seconds=1.0, latencies=[0.001] * 1000, first_error="WrongAnswer: x")
        row = summarize("list_view", 1, "jmapd", cell)
        self.assertEqual(row.status, FAILED)
        self.assertEqual(row.rps, 0.0)
        self.assertIn("WrongAnswer: x", row.reason)

    def test_cells_add_up(self) -> None:
        """
        Rounds of a cell add their counts, times and latencies.
        """
        total = Cell()
        total.add(Cell(requests=10, seconds=1.0, latencies=[0.1]))
        total.add(Cell(requests=30, seconds=1.0, latencies=[0.2], errors=1, first_error="e"))
        self.assertEqual((total.requests, total.errors, total.seconds, total.latencies, total.first_error),
                         (40, 1, 2.0, [0.1, 0.2], "e"))


class RatioTests(TestCase):
    def test_ratio(self) -> None:
        """
        A ratio is value over base; no base, no ratio.
        """
        self.assertEqual(ratio(300.0, 100.0), 3.0)
        self.assertTrue(math.isnan(ratio(1.0, 0.0)))
        self.assertTrue(math.isnan(ratio(1.0, math.nan)))

    def test_ratios_to_first_target(self) -> None:
        """
        Each target is compared with the first target of the run in the
        same workload and connection count, not with whichever came first.
        """
        rows = [
            Row("list_view", 4, "cyrus", OK, rps=100.0),
            Row("list_view", 4, "jmapd", OK, rps=350.0),
            Row("list_view", 1, "jmapd", OK, rps=90.0),
            Row("list_view", 1, "cyrus", OK, rps=30.0),
        ]
        got = ratios(rows, ["jmapd", "cyrus"])
        self.assertEqual(got[("list_view", 4, "jmapd")], 1.0)
        self.assertAlmostEqual(got[("list_view", 4, "cyrus")], 100 / 350)
        self.assertAlmostEqual(got[("list_view", 1, "cyrus")], 1 / 3)

    def test_no_ratio_when_first_target_skipped(self) -> None:
        """
        When the first target skipped a workload, the others have no ratio
        (rather than a ratio to themselves).
        """
        rows = [Row("search", 1, "jmapd", SKIPPED, "Email/query not supported"),
                Row("search", 1, "cyrus", OK, rps=50.0)]
        self.assertTrue(math.isnan(ratios(rows, ["jmapd", "cyrus"])[("search", 1, "cyrus")]))

    def test_ceiling_fractions(self) -> None:
        """
        core_echo of the server is reported as a fraction of each ceiling
        at each connection count.
        """
        rows = [Row("core_echo", 1, "jmapd", OK, rps=600.0), Row("core_echo", 1, "ceiling", OK, rps=1000.0),
                Row("core_echo", 1, "ceiling+thread", OK, rps=800.0), Row("mailbox_get", 1, "ceiling", OK, rps=1.0)]
        self.assertEqual(ceiling_fractions(rows, "jmapd", ["ceiling", "ceiling+thread"]),
                         [(1, "ceiling", 0.6), (1, "ceiling+thread", 0.75)])


class MarkdownTests(TestCase):
    def test_table(self) -> None:
        """
        The table has one line per row with rate, latencies and ratio, and
        says why a cell was skipped; import throughput has its own table.
        """
        rows = [Row("core_echo", 1, "jmapd", OK, rps=1000.0, p50_ms=0.9, p99_ms=2.5, client_cpu=0.4),
                Row("core_echo", 1, "cyrus", OK, rps=500.0, p50_ms=1.9, p99_ms=5.0, client_cpu=0.2),
                Row("search", 1, "jmapd", SKIPPED, "Email/query not supported (unknownMethod) by jmapd")]
        text = markdown(rows, ["jmapd", "cyrus"], [ImportRow("jmapd", 100, 2.0, 4, 10),
                                                   ImportRow("cyrus", 100, 8.0, 4, 10)])
        self.assertIn("| core_echo | 1 | jmapd | 1,000 | 0.90 | 2.50 | 1.00 | 40% |", text)
        self.assertIn("| core_echo | 1 | cyrus | 500 | 1.90 | 5.00 | 0.50 | 20% |", text)
        self.assertIn("skipped: Email/query not supported (unknownMethod) by jmapd", text)
        self.assertIn("| 100 | 2.0 | 50 | 1.00 |", text)
        self.assertIn("| 100 | 8.0 | 12 | 0.25 |", text)
