# -*- test-case-name: tests.bench.test_report -*-
"""
PNG plots of a run, made with matplotlib (the C{bench} extra): requests
per second per workload and connection count, one bar per target, one
panel per workload, so that the side-by-side comparison is what the eye
sees first.  Skipped and failed cells have no bar.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402

from bench.report import OK, Row  # noqa: E402

__all__ = ["plot_rates"]


def plot_rates(rows: Sequence[Row], targets: Sequence[str], out: str) -> list[str]:
    """
    Write C{requests.png} under C{out}; returns the paths written.
    """
    workloads: list[str] = []
    for row in rows:
        if row.status == OK and row.workload not in workloads:
            workloads.append(row.workload)
    if not workloads:
        return []
    connections = sorted({row.connections for row in rows})
    rates = {(r.workload, r.connections, r.target): r.rps for r in rows if r.status == OK}
    columns = min(3, len(workloads))
    lines = math.ceil(len(workloads) / columns)
    figure, axes = plt.subplots(lines, columns, figsize=(5 * columns, 3.6 * lines), squeeze=False)
    width = 0.8 / max(1, len(targets))
    for n, workload in enumerate(workloads):
        ax = axes[n // columns][n % columns]
        shown = [t for t in targets if any((workload, c, t) in rates for c in connections)]
        for k, target in enumerate(shown):
            xs = [i + (k - (len(shown) - 1) / 2) * width for i in range(len(connections))]
            ys = [rates.get((workload, c, target), 0.0) for c in connections]
            # One colour per target in every panel, whichever targets a panel shows.
            ax.bar(xs, ys, width, label=target, color=f"C{list(targets).index(target) % 10}")
        ax.set_title(workload)
        ax.set_xticks(range(len(connections)), [f"{c} conn" for c in connections])
        ax.set_ylabel("requests/s")
        ax.legend(fontsize="small")
    for n in range(len(workloads), lines * columns):
        axes[n // columns][n % columns].axis("off")
    figure.tight_layout()
    path = os.path.join(out, "requests.png")
    figure.savefig(path, dpi=90)
    plt.close(figure)
    return [path]
