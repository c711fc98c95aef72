# -*- test-case-name: tests.bench.test_nodes -*-
"""
PostgreSQL against SQLite, and two jmapd nodes against one (issue 10).

    python -m bench.nodes [--messages N] [--connections 1,4,16] [--duration S]
                          [--rounds R] [--db-url URL] [--out DIR] [--update-docs]

It starts a scratch PostgreSQL server (the test suite's, L{tests.pg},
with PostgreSQL's default durability, since jmapd runs SQLite with
C{synchronous = FULL}), or uses the one C{--db-url} names, and creates a
fresh database there, dropped at the end.  Then, with the machinery of
L{bench.suite}:

 1. a jmapd on SQLite and a jmapd on that database (each C{twistd -n
    jmapd} on 127.0.0.1 with a fresh data directory) get the same
    deterministic corpus, and list_view and write_flags run against both
    in interleaved rounds: the ratios are PostgreSQL's to SQLite's;
 2. a second jmapd process, started with the first on the same database
    and the same blob directory, joins in: the same workloads run against
    the first node alone ("1 node") and against both ("2 nodes"), the
    load connections spread round-robin over the two
    (L{bench.load.spread}): the ratios are two nodes' to one node's.

Every answer is checked, as in the suite.  The ratios are the result;
the machine is shared, so absolute numbers from another run mean little.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import orjson
from attrs import evolve

from bench import report, suite
from bench.corpus import DEFAULT_SEED
from bench.report import FAILED, ImportRow, Row
from bench.targets import JmapdProcess, Session, TargetError, discover
from bench.workloads import by_name

__all__ = ["main", "parser", "ratio_table", "section"]

#: The workloads this benchmark runs: a read and a write.
WORKLOADS = ("list_view", "write_flags")

SQLITE = "sqlite"
POSTGRESQL = "postgresql"
ONE_NODE = "1 node"
TWO_NODES = "2 nodes"

BEGIN = "<!-- bench:nodes:begin -->"
END = "<!-- bench:nodes:end -->"
HEADING = "## PostgreSQL and two nodes"


def _say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def _connection_counts(text: str) -> list[int]:
    try:
        counts = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected connection counts such as 1,4,16, got {text!r}") from None
    if not counts or any(count < 1 for count in counts):
        raise argparse.ArgumentTypeError(f"expected positive connection counts such as 1,4,16, got {text!r}")
    return counts


def _postgresql_url(text: str) -> str:
    if urlsplit(text).scheme not in ("postgresql", "postgres"):
        raise argparse.ArgumentTypeError(f"expected a postgresql:// URL, got {text!r}")
    return text


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench.nodes",
                                description="jmapd on PostgreSQL against SQLite, and two nodes against one.")
    p.add_argument("--messages", type=int, default=1000, help="corpus size (default 1000)")
    p.add_argument("--connections", type=_connection_counts, default=[1, 4, 16],
                   help="connection counts (default 1,4,16)")
    p.add_argument("--duration", type=float, default=6.0,
                   help="measured seconds per workload, connection count and target (default 6)")
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds the duration is split into (default 3)")
    p.add_argument("--db-url", type=_postgresql_url, metavar="URL",
                   help="an existing PostgreSQL server (a database its user may CREATE DATABASE from);"
                        " default: start a scratch server")
    p.add_argument("--out", default="bench/results/nodes", help="directory for results.json and results.md")
    p.add_argument("--update-docs", action="store_true",
                   help=f"put the tables into docs/benchmarks.md under {HEADING!r}")
    # What bench.suite's loading and measuring read, fixed here.
    p.set_defaults(seed=DEFAULT_SEED, warmup=0.5, new_connection=False, load_connections=4, import_batch=10,
                   log_level="warn")
    return p


# -- PostgreSQL -------------------------------------------------------------------


@contextlib.contextmanager
def _server(url: str | None) -> Iterator[tuple[str, str]]:
    """
    The URL of a PostgreSQL server to create the benchmark's database
    on, and what it is: C{url}, or a scratch server started (and
    stopped) here.
    """
    if url is not None:
        yield url, "the server of --db-url"
        return
    try:
        from tests.pg import ScratchServer, install
    except ImportError as error:
        raise TargetError(f"cannot start a scratch PostgreSQL (run from the checkout, or give --db-url): {error}") from None
    reason = install()
    if reason is not None:
        raise TargetError(f"no PostgreSQL to start: {reason}; give --db-url")
    server = ScratchServer(durable=True)
    _say("starting a scratch PostgreSQL ...")
    try:
        server.start()
    except (RuntimeError, OSError, KeyError) as error:
        server.stop()
        raise TargetError(f"the scratch PostgreSQL did not start: {error}") from None
    try:
        yield server.url, f"a scratch server, {server.version}, fsync on"
    finally:
        server.stop()


@contextlib.contextmanager
def _database(server_url: str) -> Iterator[str]:
    """
    A new, empty database on the server (C collation, as
    docs/operations.md asks for), dropped afterwards: its URL.
    """
    import psycopg

    name = f"jmapd_bench_{os.getpid()}"
    try:
        admin = psycopg.connect(server_url, autocommit=True)
    except psycopg.Error as error:
        raise TargetError(f"--db-url: cannot connect: {' '.join(str(error).split())}") from None
    try:
        admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        admin.execute(f"CREATE DATABASE {name} TEMPLATE template0 ENCODING 'UTF8' LC_COLLATE 'C' LC_CTYPE 'C'")
        parts = urlsplit(server_url)
        yield urlunsplit(parts._replace(path=f"/{name}"))
    finally:
        with contextlib.suppress(psycopg.Error):
            admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        admin.close()


# -- the run ----------------------------------------------------------------------


def _as_target(session: Session, name: str, other_nodes: Sequence[Session] = ()) -> Session:
    """
    The same server under another name (the table's), optionally with
    more nodes; it opens its own setup connection.
    """
    return evolve(session, spec=evolve(session.spec, name=name), connection=None, other_nodes=list(other_nodes))


async def run(args: argparse.Namespace) -> int:
    workloads = by_name(list(WORKLOADS))
    started = datetime.now(UTC)
    os.makedirs(args.out, exist_ok=True)
    with contextlib.ExitStack() as stack:
        server_url, server_text = stack.enter_context(_server(args.db_url))
        db_url = stack.enter_context(_database(server_url))
        shared = tempfile.mkdtemp(prefix="jmapd-bench-shared-")
        stack.callback(shutil.rmtree, shared, True)
        sessions: list[Session] = []

        @stack.callback
        def close() -> None:
            for session in sessions:
                session.close()

        def start(name: str, **kwargs: Any) -> JmapdProcess:
            _say(f"starting jmapd {name} ...")
            process = JmapdProcess.start(name, **kwargs)
            stack.callback(process.stop)
            return process

        async def connect(process: JmapdProcess) -> Session:
            session = await discover(process.spec)
            sessions.append(session)
            return session

        sqlite = await connect(start(SQLITE, log_level=args.log_level))
        node_settings = {"db-url": db_url, "db-path": shared}
        first = start(POSTGRESQL, log_level=args.log_level, settings={**node_settings, "node-id": "node-1"})
        postgresql = await connect(first)
        # The second node starts now, so that its start-up work (imports,
        # connections, the first housekeeping pass) is over long before it
        # is measured, and it idles through the first comparison as a
        # node of a real installation would.
        second = start("postgresql-2", log_level=args.log_level, password=first.spec.password,
                       settings={**node_settings, "node-id": "node-2"})
        node_2 = await connect(second)

        engines = [sqlite, postgresql]
        loaded, imports = await suite.load_corpus(args, engines)
        if len(loaded) != len(engines):
            raise TargetError(f"the corpus could not be loaded into {sorted({s.name for s in engines} - set(loaded))}")
        engine_rows = await suite.measure(args, workloads, engines, loaded, args.connections)

        one = _as_target(postgresql, ONE_NODE)
        two = _as_target(postgresql, TWO_NODES, [node_2])
        sessions += [one, two]
        node_loaded = {ONE_NODE: loaded[POSTGRESQL], TWO_NODES: loaded[POSTGRESQL]}
        node_rows = await suite.measure(args, workloads, [one, two], node_loaded, args.connections)

    text = tables(engine_rows, imports, node_rows)
    print(text)
    results = {
        "when": started.isoformat(timespec="seconds"),
        "machine": suite.machine(),
        "postgresql": server_text,
        "arguments": {key: value for key, value in vars(args).items() if key != "db_url"},
        "engines": [row.to_json() for row in engine_rows],
        "imports": [imp.to_json() for imp in imports],
        "nodes": [row.to_json() for row in node_rows],
    }
    with open(os.path.join(args.out, "results.json"), "wb") as f:
        f.write(orjson.dumps(results, option=orjson.OPT_INDENT_2))
    with open(os.path.join(args.out, "results.md"), "w") as md:
        md.write(text)
    if args.update_docs:
        update_docs(section(results, text))
    return 1 if any(row.status == FAILED for row in [*engine_rows, *node_rows]) else 0


# -- the report (pure) --------------------------------------------------------------


def ratio_table(engine_rows: Sequence[Row], node_rows: Sequence[Row]) -> str:
    """
    The two results side by side: per workload and connection count,
    PostgreSQL's req/s over SQLite's, and two nodes' over one node's
    ("-" where either cell failed or is missing).
    """
    engines = report.ratios(engine_rows, [SQLITE, POSTGRESQL])
    nodes = report.ratios(node_rows, [ONE_NODE, TWO_NODES])
    cells: list[tuple[str, int]] = []
    for row in [*engine_rows, *node_rows]:
        if (row.workload, row.connections) not in cells:
            cells.append((row.workload, row.connections))
    lines = [f"| workload | conns | {POSTGRESQL} / {SQLITE} | {TWO_NODES} / {ONE_NODE} |", "|---|---:|---:|---:|"]
    for workload, connections in cells:
        lines.append(f"| {workload} | {connections} | {_ratio(engines.get((workload, connections, POSTGRESQL)))}"
                     f" | {_ratio(nodes.get((workload, connections, TWO_NODES)))} |")
    return "\n".join(lines) + "\n"


def _ratio(value: float | None) -> str:
    return "-" if value is None or value != value else f"{value:.2f}"


def tables(engine_rows: Sequence[Row], imports: Sequence[ImportRow], node_rows: Sequence[Row]) -> str:
    """
    The whole result as Markdown: the ratios, then each comparison's
    table as L{bench.report.markdown} writes it.
    """
    return "\n".join([
        ratio_table(engine_rows, node_rows),
        f"{SQLITE} against {POSTGRESQL} (one node each):",
        "",
        report.markdown(engine_rows, [SQLITE, POSTGRESQL], imports),
        "One node against two nodes on the same PostgreSQL database:",
        "",
        report.markdown(node_rows, [ONE_NODE, TWO_NODES]),
    ])


def section(results: dict[str, Any], text: str) -> str:
    """
    The results section of docs/benchmarks.md, between the markers.
    """
    m = results["machine"]
    a = results["arguments"]
    return "\n".join([
        BEGIN,
        f"Run of {results['when']} on {m['cpus']} CPUs ({m['cpu']}), Python {m['python']}, {m['system']},"
        f" PostgreSQL: {results['postgresql']}: `python -m bench.nodes --messages {a['messages']}"
        f" --connections {','.join(str(c) for c in a['connections'])} --duration {a['duration']}"
        f" --rounds {a['rounds']}`; workloads {', '.join(WORKLOADS)}; corpus of {a['messages']} messages.",
        "",
        text.rstrip(),
        END,
    ])


def update_docs(marked: str) -> None:
    """
    Put the results section into docs/benchmarks.md, under its own
    heading when the file does not have it yet.
    """
    path = os.path.join(suite.DOCS, "benchmarks.md")
    text = open(path).read() if os.path.exists(path) else "# Benchmarks\n"
    if BEGIN not in text:
        text = text.rstrip("\n") + f"\n\n{HEADING}\n\n{BEGIN}\n{END}\n"
    with open(path, "w") as f:
        f.write(suite.replace_marked(text, BEGIN, END, marked))


def main(argv: Sequence[str] | None = None) -> int:
    return suite.run_main("bench.nodes", parser(), run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
