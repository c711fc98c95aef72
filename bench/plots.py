# -*- test-case-name: tests.bench.test_report -*-
"""
PNG plots made with matplotlib (the C{bench} extra): for a run of the
suite, requests per second per workload and connection count, one bar per
target, one panel per workload, so that the side-by-side comparison is
what the eye sees first (skipped and failed cells have no bar); for
L{bench.search_scale}, each request's cost against the account's size.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402

from bench.report import OK, Row  # noqa: E402

__all__ = ["plot_rates", "plot_scale"]


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


def plot_scale(results: Mapping[str, Mapping[int, tuple[float, float, float]]], path: str) -> str:
    """
    Write a PNG of what each request of L{bench.search_scale} costs against
    the account's size: p50 and p99 in milliseconds (from C{results}:
    workload -> size -> (p50, p99, CPU p50)), sizes on a logarithmic axis,
    one line per workload.  Returns C{path}.
    """
    figure, (p50_axis, p99_axis) = plt.subplots(1, 2, figsize=(11, 4))
    for n, (workload, by_size) in enumerate(results.items()):
        sizes = sorted(by_size)
        for axis, index in ((p50_axis, 0), (p99_axis, 1)):
            axis.plot(sizes, [by_size[size][index] for size in sizes], marker="o", label=workload, color=f"C{n % 10}")
    for axis, title in ((p50_axis, "p50"), (p99_axis, "p99")):
        axis.set_xscale("log")
        axis.set_xlabel("messages in the account")
        axis.set_ylabel("ms per request")
        axis.set_ylim(bottom=0)
        axis.set_title(f"{title}: cost against account size")
        axis.legend(fontsize="small")
    figure.tight_layout()
    figure.savefig(path, dpi=90)
    plt.close(figure)
    return path
