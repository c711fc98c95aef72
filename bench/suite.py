# -*- test-case-name: tests.bench.test_report -*-
"""
The benchmark suite's command line and its run: start or find the
targets, load the corpus into each, run every workload at every
connection count against every target in interleaved rounds, and write
the table, the raw results and the plots.

    python -m bench [--target NAME=URL,USER,PASSWORD]... [--peer]
                    [--messages N] [--connections 1,4,16] [--duration S]
                    [--rounds R] [--new-connection] [--workloads a,b]
                    [--out DIR] [--update-docs]

Without --target it starts its own jmapd; --peer adds Cyrus (see
L{bench.peer}).  The two ceiling servers (L{bench.ceiling}) join the
core_echo workload.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import platform
import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import orjson

from bench import report
from bench.corpus import DEFAULT_SEED, generate
from bench.load import Cell, run_cell
from bench.loader import Loader, ensure_mailboxes
from bench.report import FAILED, SKIPPED, ImportRow, Row
from bench.targets import CeilingProcess, JmapdProcess, Session, TargetError, discover, parse_target
from bench.workloads import Loaded, Workload, WrongAnswer, by_name, unsupported

CHUNK = 500
DOCS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "docs")
BEGIN = "<!-- bench:results:begin -->"
END = "<!-- bench:results:end -->"


def _say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench", description="Benchmark JMAP servers side by side.")
    p.add_argument("--target", action="append", default=[], metavar="NAME=URL,USER,PASSWORD",
                   help="a JMAP server by session URL (repeatable); without it the suite starts a jmapd")
    p.add_argument("--jmapd", action="store_true", help="also start a jmapd when --target is given (it goes first)")
    p.add_argument("--peer", action="store_true", help="also start Cyrus from ../shared/peers/cyrus")
    p.add_argument("--no-ceiling", action="store_true", help="do not run the ceiling servers for core_echo")
    p.add_argument("--messages", type=int, default=2000, help="corpus size (default 2000)")
    p.add_argument("--seed", type=int, default=DEFAULT_SEED)
    p.add_argument("--connections", default="1,4,16", help="connection counts (default 1,4,16)")
    p.add_argument("--duration", type=float, default=6.0,
                   help="measured seconds per workload, connection count and target (default 6)")
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds the duration is split into")
    p.add_argument("--warmup", type=float, default=0.5, help="unmeasured seconds before each cell")
    p.add_argument("--new-connection", action="store_true", help="a new TCP connection per request")
    p.add_argument("--workloads", default="", help="comma-separated workload names (default: all)")
    p.add_argument("--load-connections", type=int, default=4, help="connections loading the corpus")
    p.add_argument("--import-batch", type=int, default=10, help="messages per Email/import")
    p.add_argument("--pin", action="store_true", help="pin the servers to CPU 0 and the client to CPU 1")
    p.add_argument("--profile", metavar="FILE",
                   help="cProfile the suite's jmapd (twistd --profile) into FILE, for python -m pstats")
    p.add_argument("--log-level", default="warn", help="log-level of the suite's jmapd (default warn)")
    p.add_argument("--out", default="bench/results", help="directory for results.json, results.md, plots")
    p.add_argument("--update-docs", action="store_true",
                   help="put the table and plots into docs/benchmarks.md and docs/benchmarks/")
    return p


class _Servers:
    """
    The servers this run started, stopped whatever happens.
    """

    def __init__(self) -> None:
        self.started: list[Any] = []

    def add(self, server: Any) -> Any:
        self.started.append(server)
        return server

    def stop(self) -> None:
        for server in reversed(self.started):
            with contextlib.suppress(Exception):
                server.stop()


def _probe_reason(workload: Workload, session: Session, loaded: Loaded | None) -> str | None:
    if workload.needs_mail and not session.has_mail:
        return f"{session.name} has no urn:ietf:params:jmap:mail"
    if session.spec.echo_only and workload.name != "core_echo":
        return "ceiling answers Core/echo only"
    if workload.needs_mail and loaded is None:
        return "the corpus was not loaded"
    return None


async def _prepare(workload: Workload, session: Session, loaded: Loaded | None) -> tuple[str, str, Any]:
    """
    Set up and send one request: (status, reason, (bodies, context)).
    An unsupported method is a skip; a wrong answer a failure.
    """
    reason = _probe_reason(workload, session, loaded)
    if reason:
        return SKIPPED, reason, None
    context = await workload.setup(session, loaded)
    bodies = workload.requests(loaded, context)
    response = await session.send(session.api_request(orjson.dumps(bodies[0])))
    if response.status != 200:
        with contextlib.suppress(ValueError):
            problem = orjson.loads(response.body)
            if isinstance(problem, dict) and str(problem.get("type", "")).endswith(":unknownCapability"):
                return SKIPPED, f"capability not supported by {session.name}: {problem.get('detail', '')}", None
        return FAILED, f"HTTP {response.status}: {response.body[:200]!r}", None
    answer = orjson.loads(response.body)
    reason = unsupported(bodies[0], answer)
    if reason:
        return SKIPPED, f"{reason} by {session.name}", None
    try:
        workload.check(loaded, context, bodies[0], answer)
    except WrongAnswer as error:
        return FAILED, f"wrong answer: {error}", None
    return "ok", "", (bodies, context)


async def run(args: argparse.Namespace) -> int:
    connection_counts = [int(c) for c in args.connections.split(",") if c]
    workloads = by_name([w for w in args.workloads.split(",") if w])
    workloads.sort(key=lambda w: w.writes)
    pin = args.pin and (os.cpu_count() or 1) >= 2
    server_cpus = {0} if pin else None
    servers = _Servers()
    sessions: list[Session] = []
    os.makedirs(args.out, exist_ok=True)
    try:
        specs = [parse_target(t) for t in args.target]
        if not specs or args.jmapd:
            _say("starting jmapd ...")
            specs.insert(0, servers.add(JmapdProcess.start(cpus=server_cpus, log_level=args.log_level,
                                                               profile=args.profile)).spec)
        if args.peer:
            from bench.peer import CyrusPeer

            _say("starting Cyrus (../shared/peers/cyrus/up.sh) ...")
            specs.append(servers.add(CyrusPeer.start(cpus=server_cpus)).spec)
        if not args.no_ceiling and any(w.name == "core_echo" for w in workloads):
            specs.append(servers.add(CeilingProcess.start("ceiling", thread=False, cpus=server_cpus)).spec)
            specs.append(servers.add(CeilingProcess.start("ceiling+thread", thread=True, cpus=server_cpus)).spec)
        if pin:
            os.sched_setaffinity(0, {1})
        for spec in specs:
            sessions.append(await discover(spec))
        names = [s.name for s in sessions]
        for session in sessions:
            limit = session.max_concurrent_requests
            if limit is not None and limit < max(connection_counts) and not session.spec.echo_only:
                _say(f"warning: {session.name} allows {limit} concurrent requests; more connections may be refused")

        loaded: dict[str, Loaded] = {}
        imports: list[ImportRow] = []
        mail_sessions = [s for s in sessions if s.has_mail and not s.spec.echo_only]
        if any(w.needs_mail for w in workloads) and mail_sessions:
            loaded, imports = await load_corpus(args, mail_sessions)
            # Servers that index text in the background (Cyrus's squatter) get a moment.
            await asyncio.sleep(2)

        rows = await measure(args, workloads, sessions, loaded, connection_counts)
    finally:
        for session in sessions:
            session.close()
        servers.stop()

    ceilings = [n for n in names if n.startswith("ceiling")]
    fractions = report.ceiling_fractions(rows, names[0], ceilings)
    table = report.markdown(rows, names, imports, fractions)
    print(table)
    results = {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "arguments": {k: v for k, v in vars(args).items() if k != "target"},
        "targets": names,
        "rows": [row.to_json() for row in rows],
        "imports": [imp.to_json() for imp in imports],
        "ceiling_fractions": fractions,
    }
    with open(os.path.join(args.out, "results.json"), "wb") as f:
        f.write(orjson.dumps(results, option=orjson.OPT_INDENT_2))
    with open(os.path.join(args.out, "results.md"), "w") as f:
        f.write(table)
    plots = []
    try:
        from bench.plots import plot_rates

        plots = plot_rates(rows, names, args.out)
    except ImportError:
        _say("matplotlib is not installed (pip install '.[bench]'): no plots")
    if args.update_docs:
        update_docs(results, table, plots)
    return 1 if any(row.status == FAILED for row in rows) else 0


async def load_corpus(args: argparse.Namespace, sessions: Sequence[Session]) -> tuple[dict[str, Loaded], list[ImportRow]]:
    """
    Generate the corpus (C{args.messages}, C{args.seed}) and load it into
    each target, the targets taking turns one chunk at a time; a target
    that cannot be loaded is left out, saying why.

    @return: what each loaded target holds, by name, and its import rate.
    """
    _say(f"generating {args.messages} messages (seed {args.seed}) ...")
    messages = list(generate(args.messages, args.seed))
    loaders = []
    for session in sessions:
        try:
            mailboxes = await ensure_mailboxes(session)
        except TargetError as error:
            _say(f"{session.name}: cannot load the corpus: {error}")
            continue
        loaders.append(Loader(session, mailboxes, messages, args.load_connections, args.import_batch))
    failed: set[str] = set()
    for start in range(0, len(messages), CHUNK):
        for loader in loaders:
            if loader.session.name in failed:
                continue
            try:
                await loader.load(range(start, min(start + CHUNK, len(messages))))
            except TargetError as error:
                _say(f"{loader.session.name}: loading failed: {error}")
                failed.add(loader.session.name)
        _say(f"loaded {min(start + CHUNK, len(messages))}/{len(messages)}")
    loaded: dict[str, Loaded] = {}
    imports: list[ImportRow] = []
    for loader in loaders:
        if loader.session.name not in failed:
            loaded[loader.session.name] = loader.result()
            imports.append(ImportRow(loader.session.name, loader.loaded, loader.seconds,
                                     args.load_connections, args.import_batch))
            _say(f"{loader.session.name}: imported {loader.loaded} messages at {loader.rate:.0f}/s")
    return loaded, imports


async def measure(args: argparse.Namespace, workloads: Sequence[Workload], sessions: Sequence[Session],
                  loaded: dict[str, Loaded], connection_counts: Sequence[int]) -> list[Row]:
    """
    Run each workload at each connection count against every target in
    interleaved rounds (C{args.duration}, C{args.rounds}, C{args.warmup},
    C{args.new_connection}), checking every answer: one row per cell.
    """
    rows: list[Row] = []
    per_round = args.duration / max(1, args.rounds)
    for workload in workloads:
        active: list[tuple[Session, list[dict[str, Any]], Any]] = []
        for session in sessions:
            target_loaded = loaded.get(session.name)
            try:
                status, reason, prepared = await _prepare(workload, session, target_loaded)
            except (TargetError, OSError, ValueError, KeyError) as error:
                status, reason, prepared = FAILED, f"setup: {error}", None
            if status != "ok":
                if not (status == SKIPPED and session.spec.echo_only):
                    _say(f"{workload.name} on {session.name}: {status}: {reason}")
                    rows.extend(Row(workload.name, c, session.name, status, reason) for c in connection_counts)
                continue
            active.append((session, *prepared))
        for connections in connection_counts:
            cells = {session.name: Cell() for session, _, _ in active}
            for session, bodies, context in active:
                if args.warmup > 0:
                    await run_cell(session, bodies, _checker(workload, loaded.get(session.name), context),
                                   connections, args.warmup, args.new_connection)
            for round_number in range(args.rounds):
                # A, B, C then B, C, A ...: no target always follows the same one.
                shift = round_number % len(active) if active else 0
                for session, bodies, context in active[shift:] + active[:shift]:
                    cell = await run_cell(session, bodies, _checker(workload, loaded.get(session.name), context),
                                          connections, per_round, args.new_connection)
                    cells[session.name].add(cell)
            for session, _, _ in active:
                row = report.summarize(workload.name, connections, session.name, cells[session.name])
                rows.append(row)
                _say(f"{workload.name:13} c={connections:<3} {session.name:15} "
                     + (f"{row.rps:9.0f} req/s  p50 {row.p50_ms:7.2f} ms  p99 {row.p99_ms:7.2f} ms"
                        f"  client CPU {row.client_cpu:.0%}" if row.status == "ok" else f"{row.status}: {row.reason}"))
    return rows


def _checker(workload: Workload, loaded: Loaded | None, context: Any) -> Any:
    def check(request: dict[str, Any], response: Any) -> None:
        workload.check(loaded, context, request, response)

    return check


def machine() -> dict[str, Any]:
    model = ""
    with contextlib.suppress(OSError):
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    return {"cpus": os.cpu_count(), "cpu": model, "python": platform.python_version(),
            "system": f"{platform.system()} {platform.release()}"}


def update_docs(results: dict[str, Any], table: str, plots: list[str]) -> None:
    """
    Replace the results section of docs/benchmarks.md (between the
    markers) and copy the plots next to it.
    """
    import shutil

    path = os.path.join(DOCS, "benchmarks.md")
    images = os.path.join(DOCS, "benchmarks")
    os.makedirs(images, exist_ok=True)
    links = []
    for plot in plots:
        shutil.copy(plot, os.path.join(images, os.path.basename(plot)))
        links.append(f"![{os.path.basename(plot)}](benchmarks/{os.path.basename(plot)})")
    m = results["machine"]
    a = results["arguments"]
    section = "\n".join([
        BEGIN,
        f"Run of {results['when']} on {m['cpus']} CPUs ({m['cpu']}), Python {m['python']}, {m['system']}:"
        f" `--messages {a['messages']} --connections {a['connections']} --duration {a['duration']}"
        f" --rounds {a['rounds']}{' --peer' if a['peer'] else ''}{' --new-connection' if a['new_connection'] else ''}`;"
        f" targets {', '.join(results['targets'])}.",
        "",
        table.rstrip(),
        "",
        *links,
        END,
    ])
    text = open(path).read() if os.path.exists(path) else f"# Benchmarks\n\n{BEGIN}\n{END}\n"
    with open(path, "w") as f:
        f.write(replace_marked(text, BEGIN, END, section))


def replace_marked(text: str, begin: str, end: str, section: str) -> str:
    """
    C{text} with what lies between the markers C{begin} and C{end}
    (included) replaced by C{section}, which starts and ends with them;
    without the markers, C{section} is appended.
    """
    if begin in text and end in text:
        head, rest = text.split(begin, 1)
        _, tail = rest.split(end, 1)
        return head + section + tail
    return text + "\n" + section + "\n"


def run_main(name: str, arguments: argparse.ArgumentParser, runner: Any, argv: Sequence[str] | None) -> int:
    """
    Parse C{argv}, run C{await runner(args)}, and say how long it took;
    a target that cannot be used ends the run with status 2.
    """
    args = arguments.parse_args(argv)
    started = time.monotonic()
    try:
        status: int = asyncio.run(runner(args))
    except TargetError as error:
        _say(f"{name}: {error}")
        return 2
    _say(f"done in {time.monotonic() - started:.0f} s; results in {args.out}/")
    return status


def main(argv: Sequence[str] | None = None) -> int:
    return run_main("bench", parser(), run, argv)
