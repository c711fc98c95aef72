"""
Tests for L{bench.nodes}: its command line, the tables and ratios it
reports, the round-robin spread of load connections over several nodes
(L{bench.load.spread}, L{bench.targets.Session.other_nodes}), the docs
update, and one short run against PostgreSQL.
"""

from __future__ import annotations

import asyncio
import io
import os
import sys
from typing import Any

from twisted.trial.unittest import TestCase

from bench import nodes, suite
from bench.load import run_cell, spread
from bench.report import FAILED, OK, Row
from bench.targets import Session, TargetSpec
from tests import pg


def _session(name: str, port: int, other_nodes: list[Session] | None = None) -> Session:
    return Session(TargetSpec(name, f"http://127.0.0.1:{port}/.well-known/jmap", "bench", "pw"),
                   "127.0.0.1", port, "/jmap/", "/jmap/upload/a/", "a", {}, "Basic YmVuY2g6cHc=",
                   other_nodes=other_nodes or [])


def _row(workload: str, connections: int, target: str, rps: float, status: str = OK) -> Row:
    return Row(workload, connections, target, status, rps=rps if status == OK else 0.0,
               reason="" if status == OK else "1 wrong answers of 10; first: WrongAnswer: x")


class ParserTests(TestCase):
    def parse(self, *argv: str) -> Any:
        return nodes.parser().parse_args(list(argv))

    def refused(self, *argv: str) -> str:
        stderr = io.StringIO()
        self.patch(sys, "stderr", stderr)
        with self.assertRaises(SystemExit):
            self.parse(*argv)
        return stderr.getvalue()

    def test_defaults(self) -> None:
        """
        Without options: 1,000 messages, 1, 4 and 16 connections, 6
        measured seconds in 3 rounds, a scratch PostgreSQL (no URL), and
        what the suite's loading and measuring read set to its defaults.
        """
        args = self.parse()
        self.assertEqual((args.messages, args.connections, args.duration, args.rounds, args.db_url),
                         (1000, [1, 4, 16], 6.0, 3, None))
        self.assertEqual((args.warmup, args.new_connection, args.load_connections, args.import_batch),
                         (0.5, False, 4, 10))
        self.assertFalse(args.update_docs)

    def test_options(self) -> None:
        """
        Each option sets what it names; --connections is a comma list.
        """
        args = self.parse("--messages", "50", "--connections", "2,8", "--duration", "1.5", "--rounds", "1",
                          "--db-url", "postgresql://postgres@127.0.0.1:5432/postgres", "--update-docs")
        self.assertEqual((args.messages, args.connections, args.duration, args.rounds),
                         (50, [2, 8], 1.5, 1))
        self.assertEqual(args.db_url, "postgresql://postgres@127.0.0.1:5432/postgres")
        self.assertTrue(args.update_docs)

    def test_bad_connections(self) -> None:
        """
        Connection counts must be positive integers; the error shows
        what was given.
        """
        self.assertIn("'1,x'", self.refused("--connections", "1,x"))
        self.assertIn("'0,4'", self.refused("--connections", "0,4"))
        self.assertIn("positive", self.refused("--connections", ","))

    def test_db_url_must_be_postgresql(self) -> None:
        """
        --db-url takes a postgresql:// URL only (not a SQLite path).
        """
        self.assertIn("postgresql://", self.refused("--db-url", "/srv/jmapd/data"))


class SpreadTests(TestCase):
    def test_round_robin(self) -> None:
        """
        Connection i goes to node i mod n: the nodes alternate, and each
        gets the same number of connections.
        """
        self.assertEqual(spread(4, ["a", "b"]), ["a", "b", "a", "b"])
        assigned = spread(16, ["a", "b"])
        self.assertEqual((assigned.count("a"), assigned.count("b")), (8, 8))

    def test_uneven(self) -> None:
        """
        With fewer connections than nodes, or a count that does not
        divide, the first nodes get the one more connection.
        """
        self.assertEqual(spread(1, ["a", "b"]), ["a"])
        self.assertEqual(spread(3, ["a", "b"]), ["a", "b", "a"])
        self.assertEqual(spread(5, ["a", "b", "c"]), ["a", "b", "c", "a", "b"])

    def test_one_node(self) -> None:
        """
        A single node gets every connection.
        """
        self.assertEqual(spread(3, ["a"]), ["a", "a", "a"])

    def test_session_nodes(self) -> None:
        """
        A session's nodes are itself first, then its other nodes; a
        session made for the table under another name keeps the server
        and account of the one it was made from.
        """
        node_2 = _session("postgresql-2", 2002)
        first = _session("postgresql", 2001)
        self.assertEqual(first.nodes, [first])
        two = nodes._as_target(first, nodes.TWO_NODES, [node_2])
        self.assertEqual(two.name, nodes.TWO_NODES)
        self.assertEqual([(n.host, n.port) for n in two.nodes], [("127.0.0.1", 2001), ("127.0.0.1", 2002)])
        self.assertEqual((two.account_id, two.authorization), (first.account_id, first.authorization))
        self.assertEqual(first.name, "postgresql")

    def test_run_cell_uses_every_node(self) -> None:
        """
        run_cell opens the connections of a session with other nodes
        round-robin: with 4 connections over 2 servers, each server
        accepts 2 connections and answers requests.
        """
        accepted = {1: 0, 2: 0}
        answered = {1: 0, 2: 0}

        def serve(number: int) -> Any:
            async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
                accepted[number] += 1
                try:
                    while True:
                        head = await reader.readuntil(b"\r\n\r\n")
                        length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
                        await reader.readexactly(length)
                        body = b'{"methodResponses": []}'
                        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
                        answered[number] += 1
                except (asyncio.IncompleteReadError, ConnectionError):
                    pass
                finally:
                    writer.close()

            return handle

        async def go() -> None:
            servers = [await asyncio.start_server(serve(n), "127.0.0.1", 0) for n in (1, 2)]
            try:
                ports = [server.sockets[0].getsockname()[1] for server in servers]
                session = _session("2 nodes", ports[0], [_session("node-2", ports[1])])
                cell = await run_cell(session, [{"using": [], "methodCalls": []}], lambda request, response: None,
                                      4, 0.05)
                self.assertEqual(cell.errors, 0)
            finally:
                for server in servers:
                    server.close()
                    await server.wait_closed()

        asyncio.run(go())
        self.assertEqual(accepted, {1: 2, 2: 2})
        self.assertTrue(answered[1] and answered[2], answered)


class TableTests(TestCase):
    ENGINES = [
        _row("list_view", 1, "sqlite", 200.0), _row("list_view", 1, "postgresql", 100.0),
        _row("write_flags", 1, "sqlite", 400.0), _row("write_flags", 1, "postgresql", 100.0),
    ]
    NODES = [
        _row("list_view", 1, "1 node", 100.0), _row("list_view", 1, "2 nodes", 150.0),
        _row("write_flags", 1, "1 node", 100.0), _row("write_flags", 1, "2 nodes", 0.0, FAILED),
    ]

    def test_ratio_table(self) -> None:
        """
        One line per workload and connection count: PostgreSQL's req/s
        over SQLite's and two nodes' over one node's, with "-" where a
        cell failed.
        """
        self.assertEqual(nodes.ratio_table(self.ENGINES, self.NODES).splitlines(), [
            "| workload | conns | postgresql / sqlite | 2 nodes / 1 node |",
            "|---|---:|---:|---:|",
            "| list_view | 1 | 0.50 | 1.50 |",
            "| write_flags | 1 | 0.25 | - |",
        ])

    def test_missing_comparison(self) -> None:
        """
        A cell measured in one comparison only has "-" in the other.
        """
        text = nodes.ratio_table(self.ENGINES, [])
        self.assertIn("| list_view | 1 | 0.50 | - |", text)

    def test_tables(self) -> None:
        """
        The whole result has the ratios, then the suite's table of each
        comparison, with the ratio column to SQLite and to one node, and
        the reason of a failed cell.
        """
        text = nodes.tables(self.ENGINES, [], self.NODES)
        self.assertTrue(text.startswith("| workload | conns | postgresql / sqlite |"))
        self.assertIn("| vs sqlite |", text)
        self.assertIn("| vs 1 node |", text)
        self.assertIn("| list_view | 1 | 2 nodes | 150 |", text)
        self.assertIn("failed: 1 wrong answers of 10", text)


class DocsTests(TestCase):
    RESULTS = {
        "when": "2026-11-26T02:00:00+00:00",
        "machine": {"cpus": 2, "cpu": "CPU", "python": "3.11.7", "system": "Linux"},
        "postgresql": "a scratch PostgreSQL 15 (fsync on)",
        "arguments": {"messages": 1000, "connections": [1, 4, 16], "duration": 6.0, "rounds": 3},
    }

    def setUp(self) -> None:
        self.docs = os.path.abspath(self.mktemp())
        os.makedirs(self.docs)
        self.patch(suite, "DOCS", self.docs)
        self.path = os.path.join(self.docs, "benchmarks.md")
        with open(self.path, "w") as f:
            f.write("# Benchmarks\n\n<!-- bench:results:begin -->\nsuite\n<!-- bench:results:end -->\n")

    def read(self) -> str:
        with open(self.path) as f:
            return f.read()

    def test_section(self) -> None:
        """
        The section says when, where, with which options, workloads and
        corpus size it was measured, between its own markers.
        """
        text = nodes.section(self.RESULTS, "| table |\n")
        self.assertTrue(text.startswith(nodes.BEGIN) and text.endswith(nodes.END))
        self.assertIn("Run of 2026-11-26T02:00:00+00:00 on 2 CPUs", text)
        self.assertIn("--messages 1000 --connections 1,4,16 --duration 6.0 --rounds 3", text)
        self.assertIn("workloads list_view, write_flags; corpus of 1000 messages", text)
        self.assertIn("fsync on", text)
        self.assertIn("| table |", text)

    def test_update_adds_then_replaces(self) -> None:
        """
        The first update adds the section under its heading after the
        suite's results, which it leaves alone; the next replaces it.
        """
        nodes.update_docs(nodes.section(self.RESULTS, "| first |\n"))
        first = self.read()
        self.assertIn("<!-- bench:results:begin -->\nsuite\n<!-- bench:results:end -->", first)
        self.assertIn(f"{nodes.HEADING}\n\n{nodes.BEGIN}", first)
        nodes.update_docs(nodes.section(self.RESULTS, "| second |\n"))
        second = self.read()
        self.assertNotIn("| first |", second)
        self.assertIn("| second |", second)
        self.assertEqual(second.count(nodes.HEADING), 1)
        self.assertEqual(second.count(nodes.BEGIN), 1)


class RunTests(TestCase):
    def test_short_run(self) -> None:
        """
        A short run against PostgreSQL (the test server's) starts SQLite,
        PostgreSQL and a second node, gets correct answers from all of
        them in every cell, and writes both comparisons with ratios.
        """
        url = pg.database_url(self, migrated=False)
        out = os.path.abspath(self.mktemp())
        stderr = io.StringIO()
        self.patch(sys, "stdout", io.StringIO())
        self.patch(sys, "stderr", stderr)
        status = nodes.main(["--messages", "20", "--connections", "2", "--duration", "0.2", "--rounds", "1",
                             "--db-url", url, "--out", out])
        self.assertEqual(status, 0, stderr.getvalue())
        with open(os.path.join(out, "results.md")) as f:
            text = f.read()
        self.assertNotIn("failed", text)
        self.assertRegex(text, r"\| list_view \| 2 \| \d+\.\d\d \| \d+\.\d\d \|")
        self.assertRegex(text, r"\| write_flags \| 2 \| \d+\.\d\d \| \d+\.\d\d \|")
        self.assertIn("| list_view | 2 | 2 nodes |", text)
