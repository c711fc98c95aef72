"""
The jmapd benchmark suite: C{python -m bench} (or C{make bench}).

It measures JMAP servers side by side in one run, as ratios, because this
machine is small and noisy: a deterministic corpus (L{bench.corpus}),
loaded through JMAP (L{bench.loader}), request shapes whose every answer
is checked (L{bench.workloads}), a cheap load client (L{bench.http},
L{bench.load}), a bare twisted.web ceiling (L{bench.ceiling}), Cyrus as a
peer (L{bench.peer}), and the table and plots (L{bench.report},
L{bench.plots}).  docs/benchmarks.md says how to run it and shows the
latest results.
"""
