# -*- test-case-name: tests.bench.test_report -*-
"""
The load generator: C{connections} client loops, each sending one request
after another for a fixed time and checking every answer.

It runs in the suite's own process, the servers in theirs; on the 2-core
machine the suite pins the servers to CPU 0 and itself to CPU 1 (see
docs/benchmarks.md).  The client's own CPU use is measured with each
cell: near 100 % it is the client, not the server, that sets the pace.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import orjson
from attrs import define, field

from bench.http import Connection, HTTPError
from bench.targets import Session
from bench.workloads import WrongAnswer

__all__ = ["Cell", "run_cell", "spread"]

_T = TypeVar("_T")


@define
class Cell:
    """
    The raw results of one workload at one connection count against one
    target, summed over rounds.
    """

    requests: int = 0
    errors: int = 0
    seconds: float = 0.0
    client_cpu: float = 0.0
    latencies: list[float] = field(factory=list)
    first_error: str | None = None

    def add(self, other: Cell) -> None:
        self.requests += other.requests
        self.errors += other.errors
        self.seconds += other.seconds
        self.client_cpu += other.client_cpu
        self.latencies.extend(other.latencies)
        if self.first_error is None:
            self.first_error = other.first_error


def spread(connections: int, nodes: Sequence[_T]) -> list[_T]:
    """
    The node each of C{connections} connections talks to: round-robin,
    so connection C{i} goes to node C{i mod len(nodes)} and every node
    gets the same number of connections, give or take one.
    """
    return [nodes[number % len(nodes)] for number in range(connections)]


async def run_cell(
    session: Session,
    bodies: list[dict[str, Any]],
    check: Callable[[dict[str, Any], Any], None],
    connections: int,
    duration: float,
    new_connection: bool = False,
) -> Cell:
    """
    Send requests for C{duration} seconds over C{connections} connections.
    Connection C{i} starts at a different body so that workloads with
    several bodies (one per message) spread over them.  A session with
    other nodes (L{Session.other_nodes}) has its connections spread over
    all of them (L{spread}).
    """
    encoded = [orjson.dumps(body) for body in bodies]
    assigned = spread(connections, [(node, [node.api_request(body) for body in encoded]) for node in session.nodes])
    cell = Cell()
    deadline = 0.0

    async def client(number: int) -> None:
        node, raws = assigned[number]
        position = (number * len(raws)) // connections
        connection = None if new_connection else await Connection.open(node.host, node.port)
        latencies = cell.latencies
        perf = time.perf_counter
        try:
            while True:
                index = position % len(raws)
                position += 1
                started = perf()
                if started >= deadline:
                    return
                try:
                    if connection is None or connection.closed:
                        connection = await Connection.open(node.host, node.port)
                    response = await connection.request(raws[index])
                    if new_connection:
                        connection.close()
                    if response.status != 200:
                        raise WrongAnswer(f"HTTP {response.status}: {response.body[:200]!r}")
                    check(bodies[index], orjson.loads(response.body))
                except (WrongAnswer, HTTPError, OSError, ValueError, KeyError, TypeError, IndexError) as error:
                    cell.errors += 1
                    if cell.first_error is None:
                        cell.first_error = f"{type(error).__name__}: {error}"
                    if isinstance(error, (HTTPError, OSError)) and connection is not None:
                        connection.close()
                    continue
                latencies.append(perf() - started)
                cell.requests += 1
        finally:
            if connection is not None:
                connection.close()

    cpu = time.process_time()
    started = time.perf_counter()
    deadline = started + duration
    await asyncio.gather(*(client(n) for n in range(connections)))
    cell.seconds = time.perf_counter() - started
    cell.client_cpu = time.process_time() - cpu
    return cell
