# -*- test-case-name: tests.storage.test_search -*-
"""
C{python -m bench.search_scale}: how Email/query costs grow with the
account.

For each account size (1k, 10k, 100k messages by default) it fills a fresh
database with the seeded corpus of L{bench.corpus}, straight through the
storage layer (L{jmapd.storage.emails.ingest}, which also indexes for
search, 1000 messages per transaction), then times requests run by the
JMAP engine in-process (L{jmapd.protocol.engine.execute} in one read
transaction, as the API resource runs them, without HTTP and JSON
encoding, which cost the same at every size):

  - list view: Email/query (inMailbox Inbox, sort receivedAt descending,
    limit 50) and Email/get of the list properties by result reference;
  - list view of threads: the same with collapseThreads;
  - text search: Email/query text "milestone" (in about a fifth of the
    messages), sort receivedAt descending, limit 50;
  - rare search: an attachment name in about one message in 20,000;
  - from search: Email/query from a sender's name.

Blob bytes are hashed but not written (nothing timed reads them), which
keeps generating 100k messages to a couple of minutes.  The goals
(docs/benchmarks.md, "Search scale"): the list view at 100k costs at most
1.5 times what it costs at 1k; text search p50 at 100k under 20 ms.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

import orjson
from twisted.internet import task

from bench.corpus import SEARCH_WORD, generate
from bench.workloads import LIST_LIMIT, LIST_PROPERTIES
from jmapd import mail
from jmapd.blobs.store import blob_id_for_digest
from jmapd.config import default_config
from jmapd.environment import Environment
from jmapd.mail import MAIL
from jmapd.protocol import core
from jmapd.protocol.engine import CORE, Principal, Registry, execute
from jmapd.protocol.request import parse_request
from jmapd.storage import accounts, emails, mailboxes
from jmapd.storage.database import Database
from jmapd.storage.engines.sqlite import SQLiteEngine

#: The name of a PDF attachment (scan-NNNN.pdf, 9000 names): found in
#: about one message in 20,000, so the search reads all its few matches.
RARE_WORD = "scan-4242"
#: A sender's first name (one of 24).
SENDER = "Łukasz"


class HashingBlobStore:
    """
    A blob store that names blobs as the real one does and keeps nothing.
    """

    def put(self, data: bytes) -> str:
        return blob_id_for_digest(hashlib.sha256(data).digest())

    def read(self, blob_id: str) -> bytes:
        raise KeyError(blob_id)

    def exists(self, blob_id: str) -> bool:
        return False


def _utc_ms(value: str) -> int:
    ms = emails.parse_date_ms(value, utc_only=True)
    assert ms is not None
    return ms


def _environment(directory: str) -> Environment:
    database = Database(SQLiteEngine(os.path.join(directory, "jmapd.sqlite3")))
    database.migrate()
    registry = Registry()
    core.register(registry)
    mail.register(registry)
    return Environment(
        config=default_config(db_path=directory),
        registry=registry,
        database=database,
        blobs=HashingBlobStore(),
        clock=task.Clock(),
    )


def build(directory: str, size: int) -> None:
    """
    A database of one account holding C{size} corpus messages, written
    out of the WAL and closed (as a server that has been running a while
    has it: not just after a bulk load).
    """
    env = _environment(directory)
    database = env.database
    account = database.run_sync(accounts.add_account, "bench", None, write=True)
    roles: dict[str, str] = {}
    for role in ("inbox", "archive", "sent"):
        found = database.run_sync(mailboxes.find_by_role, account.id, role)
        assert found is not None, role
        roles[role] = found
    store = env.blobs
    batch: list[Any] = []

    def ingest(txn: Any, messages: list[Any]) -> None:
        for message in messages:
            emails.ingest(
                txn, store, account.id, message.raw, [roles[message.role]], list(message.keywords),
                _utc_ms(message.received_at), 0.0,
            )

    for message in generate(size):
        batch.append(message)
        if len(batch) == 1000:
            database.run_sync(ingest, batch, write=True)
            batch = []
    if batch:
        database.run_sync(ingest, batch, write=True)
    database.run_sync(lambda txn: txn.execute("PRAGMA optimize"), write=True)
    database.run_sync(lambda txn: None)
    connection = database.engine.connect()
    connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    connection.close()
    database.close()


def open_account(directory: str) -> tuple[Environment, Principal, dict[str, str]]:
    """
    The environment, principal and Mailbox ids (by role) of a built
    database.
    """
    env = _environment(directory)

    def read(txn: Any) -> tuple[str, dict[str, str]]:
        account_id = txn.fetchvalue("SELECT id FROM accounts WHERE name = 'bench'")
        roles = dict(txn.fetchall("SELECT role, id FROM mailboxes WHERE account_id = ?", (account_id,)))
        return account_id, roles

    account_id, roles = env.database.run_sync(read)
    return env, Principal(account_id, "bench"), roles


def requests(account_id: str, roles: dict[str, str]) -> dict[str, list[Any]]:
    newest = [{"property": "receivedAt", "isAscending": False}]
    list_view = [
        ["Email/query", {"accountId": account_id, "filter": {"inMailbox": roles["inbox"]}, "sort": newest,
                         "limit": LIST_LIMIT}, "q"],
        ["Email/get", {"accountId": account_id, "#ids": {"resultOf": "q", "name": "Email/query", "path": "/ids"},
                       "properties": list(LIST_PROPERTIES)}, "g"],
    ]
    threads = [
        ["Email/query", {"accountId": account_id, "filter": {"inMailbox": roles["inbox"]}, "sort": newest,
                         "limit": LIST_LIMIT, "collapseThreads": True}, "q"],
        list_view[1],
    ]

    def search(condition: dict[str, Any]) -> list[Any]:
        return [["Email/query", {"accountId": account_id, "filter": condition, "sort": newest,
                                 "limit": LIST_LIMIT}, "s"]]

    return {
        "list view": list_view,
        "list view, threads": threads,
        f"text search {SEARCH_WORD!r}": search({"text": SEARCH_WORD}),
        f"rare search {RARE_WORD!r}": search({"text": RARE_WORD}),
        f"from search {SENDER!r}": search({"from": SENDER}),
    }


def measure(env: Environment, principal: Principal, calls: list[Any], repeat: int) -> tuple[list[float], list[float]]:
    """
    Wall-clock and CPU milliseconds per request, C{repeat} times after a
    warm-up.  On a shared machine the CPU time (of the thread running the
    request) is the steadier of the two.
    """
    document = orjson.dumps({"using": [CORE, MAIL], "methodCalls": calls})
    request = parse_request(document, env.registry.capabilities, env.config.max_calls_in_request)

    def run(txn: Any) -> Any:
        return execute(txn, env, principal, request, "s")

    for _ in range(5):
        response = env.database.run_sync(run)
    for name, arguments, _ in response["methodResponses"]:
        if name == "error":
            raise RuntimeError(f"{calls[0][0]} failed: {arguments}")
    wall, cpu = [], []
    for _ in range(repeat):
        started, used = time.perf_counter(), time.thread_time()
        env.database.run_sync(run)
        cpu.append((time.thread_time() - used) * 1000)
        wall.append((time.perf_counter() - started) * 1000)
    return wall, cpu


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def main(argv: list[str] | None = None, out: Callable[[str], Any] = print) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.search_scale", description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="1000,10000,100000", help="account sizes (messages)")
    parser.add_argument("--repeat", type=int, default=200, help="timed requests per workload and size")
    parser.add_argument("--keep", help="build the databases in this directory and keep them")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds over the sizes")
    parser.add_argument("--plot", metavar="FILE", help="also write a PNG of the costs against the size (matplotlib)")
    options = parser.parse_args(argv)
    sizes = [int(s) for s in options.sizes.split(",")]
    root = tempfile.mkdtemp(prefix="search-scale-", dir=options.keep)
    try:
        directories = {}
        for size in sizes:
            directories[size] = os.path.join(root, str(size))
            os.makedirs(directories[size])
            started = time.perf_counter()
            build(directories[size], size)
            built = time.perf_counter() - started
            out(f"{size} messages: built in {built:.1f} s ({size / built:.0f} messages/s)")
        opened = {size: open_account(directories[size]) for size in sizes}
        timings: dict[str, dict[int, tuple[list[float], list[float]]]] = {}
        # Rounds interleave the sizes, so that load from elsewhere on the
        # machine falls on all of them alike.
        for _ in range(options.rounds):
            for size in sizes:
                env, principal, roles = opened[size]
                for name, calls in requests(principal.account_id, roles).items():
                    wall, cpu = measure(env, principal, calls, max(options.repeat // options.rounds, 1))
                    kept = timings.setdefault(name, {}).setdefault(size, ([], []))
                    kept[0].extend(wall)
                    kept[1].extend(cpu)
        for env, _, _ in opened.values():
            env.database.close()
    finally:
        if options.keep is None:
            shutil.rmtree(root, ignore_errors=True)
    results = {
        name: {size: (percentile(w, 0.5), percentile(w, 0.99), percentile(c, 0.5)) for size, (w, c) in by_size.items()}
        for name, by_size in timings.items()
    }
    out("")
    out(
        "| workload | "
        + " | ".join(f"{size:,}: p50 / p99 (CPU p50), ms" for size in sizes)
        + f" | {sizes[-1]:,} / {sizes[0]:,}: p50 (CPU p50) |"
    )
    out("|---|" + "---|" * (len(sizes) + 1))
    for name, by_size in results.items():
        cells = " | ".join(
            f"{by_size[size][0]:.2f} / {by_size[size][1]:.2f} ({by_size[size][2]:.2f})" for size in sizes
        )
        first, last = by_size[sizes[0]], by_size[sizes[-1]]
        out(f"| {name} | {cells} | {last[0] / first[0]:.2f}x ({last[2] / first[2]:.2f}x) |")
    if options.plot:
        from bench.plots import plot_scale

        out(f"plot: {plot_scale(results, options.plot)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
