# -*- test-case-name: tests.bench.test_report -*-
"""
Turn measurements into the results table: requests per second, p50 and
p99 latency per workload x connections x target, and the ratio of each
target's requests per second to the first target's in the same run.

Ratios, not absolute numbers, are what this machine can report honestly:
it is shared and noisy, and a number from another run is not comparable.
Everything here is pure (no I/O) so the maths is tested on its own.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from attrs import asdict, frozen

from bench.load import Cell

__all__ = ["Row", "ImportRow", "percentile", "summarize", "ratio", "markdown", "ceiling_fractions"]

OK = "ok"
SKIPPED = "skipped"
FAILED = "failed"


def percentile(values: Sequence[float], fraction: float) -> float:
    """
    The nearest-rank percentile: the smallest value such that at least
    C{fraction} of C{values} are less than or equal to it.
    """
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(fraction * len(ordered)))
    return ordered[rank - 1]


@frozen
class Row:
    workload: str
    connections: int
    target: str
    status: str
    reason: str = ""
    requests: int = 0
    errors: int = 0
    seconds: float = 0.0
    rps: float = 0.0
    p50_ms: float = math.nan
    p99_ms: float = math.nan
    client_cpu: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@frozen
class ImportRow:
    target: str
    messages: int
    seconds: float
    connections: int
    batch: int

    @property
    def rate(self) -> float:
        return self.messages / self.seconds if self.seconds else 0.0

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "rate": self.rate}


def summarize(workload: str, connections: int, target: str, cell: Cell) -> Row:
    """
    One table row from a cell; any wrong answer makes the whole cell a
    failure, whatever the rate of the right ones.
    """
    if cell.errors:
        return Row(workload, connections, target, FAILED,
                   reason=f"{cell.errors} wrong answers of {cell.errors + cell.requests}; first: {cell.first_error}",
                   requests=cell.requests, errors=cell.errors, seconds=cell.seconds)
    if not cell.requests:
        return Row(workload, connections, target, FAILED, reason="no request completed", seconds=cell.seconds)
    return Row(
        workload, connections, target, OK,
        requests=cell.requests,
        seconds=cell.seconds,
        rps=cell.requests / cell.seconds,
        p50_ms=percentile(cell.latencies, 0.50) * 1000,
        p99_ms=percentile(cell.latencies, 0.99) * 1000,
        client_cpu=cell.client_cpu / cell.seconds if cell.seconds else 0.0,
    )


def ratio(value: float, base: float) -> float:
    """
    C{value / base}; NaN when there is no base to compare with.
    """
    if not base or math.isnan(base) or math.isnan(value):
        return math.nan
    return value / base


def ratios(rows: Sequence[Row], targets: Sequence[str]) -> dict[tuple[str, int, str], float]:
    """
    For each successful row: its req/s over the first target's req/s in
    the same workload and connection count (NaN when the first target
    skipped or failed that cell: there is nothing to compare with).
    """
    first = targets[0] if targets else None
    base = {(r.workload, r.connections): r.rps for r in rows if r.status == OK and r.target == first}
    return {(r.workload, r.connections, r.target): ratio(r.rps, base.get((r.workload, r.connections), math.nan))
            for r in rows if r.status == OK}


def ceiling_fractions(rows: Sequence[Row], server: str, ceilings: Sequence[str]) -> list[tuple[int, str, float]]:
    """
    core_echo of C{server} as a fraction of each ceiling, per connection
    count: (connections, ceiling, fraction).
    """
    echo = {(r.target, r.connections): r.rps for r in rows if r.workload == "core_echo" and r.status == OK}
    out = []
    for (target, connections), rps in sorted(echo.items(), key=lambda item: item[0][1]):
        if target != server:
            continue
        for ceiling in ceilings:
            if (ceiling, connections) in echo:
                out.append((connections, ceiling, ratio(rps, echo[(ceiling, connections)])))
    return out


def _number(value: float, digits: int = 0) -> str:
    if math.isnan(value):
        return "-"
    return f"{value:,.{digits}f}"


def markdown(rows: Sequence[Row], targets: Sequence[str], imports: Sequence[ImportRow] = (),
             fractions: Sequence[tuple[int, str, float]] = ()) -> str:
    """
    The results as Markdown tables: workloads, then import throughput,
    then core_echo against the ceiling.
    """
    first = targets[0] if targets else "?"
    lines = [f"| workload | conns | target | req/s | p50 ms | p99 ms | vs {first} | client CPU |",
             "|---|---:|---|---:|---:|---:|---:|---:|"]
    by_ratio = ratios(rows, targets)
    order = {name: n for n, name in enumerate(targets)}
    workloads: list[str] = []
    for row in rows:
        if row.workload not in workloads:
            workloads.append(row.workload)
    for row in sorted(rows, key=lambda r: (workloads.index(r.workload), r.connections, order.get(r.target, 99))):
        if row.status == OK:
            lines.append(
                f"| {row.workload} | {row.connections} | {row.target} | {_number(row.rps)} | {_number(row.p50_ms, 2)}"
                f" | {_number(row.p99_ms, 2)} | {_number(by_ratio[(row.workload, row.connections, row.target)], 2)}"
                f" | {row.client_cpu:.0%} |"
            )
        else:
            reason = row.reason.replace("|", "\\|")
            lines.append(f"| {row.workload} | {row.connections} | {row.target} | {row.status}: {reason} |"
                         " | | | |")
    if imports:
        base = imports[0].rate
        lines += ["", f"| import (upload + Email/import) | messages | seconds | messages/s | vs {imports[0].target} |",
                  "|---|---:|---:|---:|---:|"]
        for imp in imports:
            lines.append(f"| {imp.target} ({imp.connections} conns, {imp.batch}/import) | {imp.messages}"
                         f" | {imp.seconds:.1f} | {_number(imp.rate)} | {_number(ratio(imp.rate, base), 2)} |")
    if fractions:
        lines += ["", "| core_echo of jmapd as a fraction of | conns | fraction |", "|---|---:|---:|"]
        for connections, ceiling, fraction in fractions:
            lines.append(f"| {ceiling} | {connections} | {_number(fraction * 100)} % |")
    return "\n".join(lines) + "\n"
