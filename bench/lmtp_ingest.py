"""
LMTP delivery throughput: C{python -m bench.lmtp_ingest}.

Starts jmapd in a child process (its own data directory under a temporary
directory, LMTP on a free port, default worker pool), creates one account,
then delivers C{--messages} messages (default 1,000) over C{--connections}
concurrent LMTP connections (default 4), each a real socket speaking
pipelined LMTP (MAIL, RCPT, DATA in one write, as postfix does when
PIPELINING is offered), and prints messages per second from the first
connection to the last 250.  Every 250 is checked, and the account must
hold exactly the delivered messages at the end.  The server's CPU time per
message is printed too; with C{blob-store: files} it is read once the
server has moved the staged messages to their files, so that it includes
that work, done after the last 250.

With C{--spool} the server runs with C{lmtp-spool: true}: a 250 says the
message is in the spool, and the rate counts until the last message is
filed (in the account), not until the last 250; the server's CPU includes
its filing process.

The goal (issue 6) is 600 messages/s on a 2-core machine.  With
C{BENCH_PROFILE=FILE} the server's reactor thread is profiled into FILE.

With C{--peer}, Cyrus (L{bench.peer.CyrusPeer}) gets the same messages over
its LMTP socket in the same run, the two interleaved run by run (jmapd,
Cyrus, jmapd, Cyrus...), and the table gives Cyrus's rate as a ratio of
jmapd's (issue 8's goal: jmapd at least 3x Cyrus).  Cyrus must hold
exactly the delivered messages too (counted through its JMAP).
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from typing import Any

TOP = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

#: The file under the data directory where the server writes, when it
#: stops, how many filing transactions and messages it counted.
GROUPS_FILE = "bench-groups"

#: The jmapd account's address the messages go to.
RECIPIENT = "alice@example.com"


def body(number: int, size: int, run: int = 0) -> bytes:
    """
    A plain-text message of about C{size} octets, with its own subject and
    a Message-ID unique to the run (Cyrus drops a second delivery of one
    Message-ID to one user, which would flatter it).
    """
    head = (
        f"From: Sender {number} <sender{number % 50}@example.org>\r\n"
        f"To: Alice <alice@example.com>\r\n"
        f"Subject: Benchmark message {number}\r\n"
        f"Date: Mon, 02 Oct 2023 10:00:00 +0000\r\n"
        f"Message-ID: <bench.{number}.{run}.{os.getpid()}@example.org>\r\n"
        f"Content-Type: text/plain; charset=utf-8\r\n\r\n"
    )
    line = "The quick brown fox jumps over the lazy dog, again and again.\r\n"
    text = head + line * max(1, (size - len(head)) // len(line))
    return text.encode("ascii")


def serve(
    data: str, port: int, workers: int | None = None, blob_store: str | None = None, spool: bool = False
) -> None:
    """
    The child process: jmapd with LMTP on C{port}, until killed.
    """
    sys.path.insert(0, TOP)
    from twisted.internet import reactor

    from jmapd.config import default_config
    from jmapd.ingest.service import lmtp_service
    from jmapd.service import makeService
    from jmapd.storage import accounts

    overrides: dict[str, Any] = {} if workers is None else {"worker_pool_size": workers}
    if blob_store is not None:
        overrides["blob_store"] = blob_store
    if spool:
        overrides["lmtp_spool"] = True
    config = default_config(
        db_path=data, jmap_port=0, jmap_bind_addr="127.0.0.1", lmtp_port=port, **overrides
    )
    service = makeService(config, reactor)
    names = {child.name for child in service}
    if "lmtp" not in names:
        lmtp = lmtp_service(service.env, reactor)
        assert lmtp is not None
        lmtp.setServiceParent(service)
    service.env.database.run_sync(accounts.add_account, "alice", None, ["alice@example.com"], write=True)
    service.startService()
    reactor.addSystemEventTrigger("before", "shutdown", service.stopService)
    lmtp_child = service.getServiceNamed("lmtp")

    def write_groups() -> None:
        # How many filing transactions the deliveries took (for report()).
        deliverer = lmtp_child.deliverer
        if deliverer is not None:
            with open(os.path.join(data, GROUPS_FILE), "w") as f:
                f.write(f"{deliverer.batches} {deliverer.messages}\n")

    reactor.addSystemEventTrigger("before", "shutdown", write_groups)
    profile = os.environ.get("BENCH_PROFILE")
    if profile:
        import cProfile

        profiler = cProfile.Profile()
        reactor.addSystemEventTrigger("after", "shutdown", lambda: profiler.dump_stats(profile))
        profiler.enable()
    reactor.run()


def _read_reply(f: Any) -> bytes:
    while True:
        line = f.readline()
        if not line:
            raise ConnectionError("the server closed the connection")
        if line[3:4] != b"-":
            return line


def _connect(address: int | str) -> socket.socket:
    """
    A connection to LMTP on a port of 127.0.0.1 or a UNIX socket path.
    """
    if isinstance(address, str):
        sock = socket.socket(socket.AF_UNIX)
        sock.connect(address)
        return sock
    sock = socket.create_connection(("127.0.0.1", address))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def client(address: int | str, messages: list[bytes], errors: list[str], recipient: str = RECIPIENT) -> None:
    """
    Deliver C{messages} on one connection, pipelining each transaction.
    """
    rcpt = b"MAIL FROM:<bob@example.org>\r\nRCPT TO:<%s>\r\nDATA\r\n" % recipient.encode("ascii")
    with _connect(address) as sock:
        f = sock.makefile("rb")
        _read_reply(f)
        sock.sendall(b"LHLO bench.example.org\r\n")
        _read_reply(f)
        for data in messages:
            sock.sendall(rcpt)
            for _ in range(3):
                reply = _read_reply(f)
                if reply[:1] not in (b"2", b"3"):
                    errors.append(reply.decode("ascii", "replace"))
            sock.sendall(data + b".\r\n")
            reply = _read_reply(f)
            if not reply.startswith(b"250 "):
                errors.append(reply.decode("ascii", "replace"))
        sock.sendall(b"QUIT\r\n")
        _read_reply(f)


def wait_for(port: int, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
                if sock.recv(100).startswith(b"220"):
                    return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"jmapd did not start listening for LMTP on port {port}")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def server_cpu(pid: int) -> float | None:
    """
    The CPU seconds (user and system) the server process and its child
    processes (with C{--spool}, the filing process) have used so far,
    where C{/proc} says (Linux); C{None} elsewhere.  With the start-up
    excluded (see L{run}) it tells, unlike the rate, how much work a
    message costs whatever else the machine is doing.
    """
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rpartition(")")[2].split()
        children: list[int] = []
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children") as f:
                children.extend(int(child) for child in f.read().split())
    except OSError:
        return None
    own = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return own + sum(server_cpu(child) or 0.0 for child in children)


def _open(data: str) -> Any:
    """
    The server's database under C{data}, on connections of this process.
    """
    sys.path.insert(0, TOP)
    from jmapd.config import default_config
    from jmapd.storage import open_database

    return open_database(default_config(db_path=data))


def _count(database: Any, table: str) -> int:
    return int(database.run_sync(lambda txn: txn.fetchvalue(f"SELECT count(*) FROM {table}", (), 0)))


def count_emails(data: str) -> int:
    database = _open(data)
    try:
        return _count(database, "emails")
    finally:
        database.close()


def _wait_until(data: str, done: Callable[[Any], bool], interval: float, timeout: float, problem: str) -> None:
    """
    Look at the server's database under C{data} every C{interval} seconds
    until C{done(database)}; the database is opened once, not at every
    look.

    @raise RuntimeError: saying C{problem}, after C{timeout} seconds.
    """
    deadline = time.monotonic() + timeout
    database = _open(data)
    try:
        while not done(database):
            if time.monotonic() > deadline:
                raise RuntimeError(problem)
            time.sleep(interval)
    finally:
        database.close()


def wait_filed(data: str, messages: int, timeout: float = 60.0) -> None:
    """
    Wait until the account holds C{messages} Emails (C{--spool}: they are
    filed after their 250).
    """
    _wait_until(
        data, lambda database: _count(database, "emails") >= messages, 0.002, timeout,
        f"{messages} messages acknowledged, not filed after {timeout} s",
    )


def wait_moved(data: str, timeout: float = 60.0) -> None:
    """
    Wait until the server has moved every staged message to its file
    (C{blob-store: files}, L{jmapd.blobs.writeback}), so that the CPU
    measured includes that work.

    @raise RuntimeError: they were not moved in time.
    """
    _wait_until(
        data, lambda database: not _count(database, "blob_data"), 0.05, timeout,
        "the server did not move the staged messages to their files",
    )


def deliver(
    address: int | str, bodies: list[bytes], connections: int, recipient: str = RECIPIENT
) -> float:
    """
    Deliver C{bodies} over C{connections} concurrent connections and return
    the seconds from the first connection to the last 250.

    @raise RuntimeError: a delivery was refused.
    """
    shares = [bodies[i::connections] for i in range(connections)]
    errors: list[str] = []
    threads = [threading.Thread(target=client, args=(address, share, errors, recipient)) for share in shares]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    if errors:
        raise RuntimeError(f"{len(errors)} deliveries failed, first: {errors[0]}")
    return elapsed


def report(
    target: str,
    messages: int,
    size: int,
    connections: int,
    elapsed: float,
    cpu: float | None,
    groups: tuple[int, int] | None = None,
) -> float:
    """
    Print one run's line: its rate, the server's CPU per message and, for
    jmapd, how many filing transactions (commits) the messages took.
    """
    rate = messages / elapsed
    print(
        f"{target}: {messages} messages of {size} octets over {connections} LMTP connections:"
        f" {elapsed:.2f} s, {rate:.0f} messages/s"
        + ("" if cpu is None else f", server CPU {cpu * 1000 / messages:.2f} ms per message")
        + ("" if not groups or not groups[0] else f", {groups[0]} commits ({groups[1] / groups[0]:.1f} messages each)"),
        flush=True,
    )
    return rate


def read_groups(data: str) -> tuple[int, int] | None:
    """
    The filing transactions and messages the server counted (L{serve}
    writes them when it stops), or C{None}.
    """
    try:
        with open(os.path.join(data, GROUPS_FILE)) as f:
            batches, filed = f.read().split()
    except (OSError, ValueError):
        return None
    return int(batches), int(filed)


def run(
    messages: int,
    connections: int,
    size: int,
    workers: int | None = None,
    round: int = 0,
    blob_store: str | None = None,
    spool: bool = False,
) -> float:
    """
    One run against a fresh jmapd; its rate in messages per second.
    """
    with tempfile.TemporaryDirectory(dir=TOP) as directory:
        data = os.path.join(directory, "data")
        port = free_port()
        child = subprocess.Popen(
            [sys.executable, "-m", "bench.lmtp_ingest", "--serve", data, "--port", str(port)]
            + ([] if workers is None else ["--workers", str(workers)])
            + ([] if blob_store is None else ["--blob-store", blob_store])
            + (["--spool"] if spool else []),
            cwd=TOP,
        )
        try:
            wait_for(port)
            bodies = [body(n, size, round) for n in range(messages)]
            cpu_before = server_cpu(child.pid)
            start = time.perf_counter()
            elapsed = deliver(port, bodies, connections)
            if spool:
                # The last 250 says the last message is in the spool; the
                # rate counts until it is filed (in the account).
                acknowledged = elapsed
                wait_filed(data, messages)
                elapsed = time.perf_counter() - start
                print(f"jmapd: last 250 after {acknowledged:.2f} s, last message filed after {elapsed:.2f} s")
            if blob_store != "database":
                wait_moved(data)
            cpu_after = server_cpu(child.pid)
            cpu = None if cpu_before is None or cpu_after is None else cpu_after - cpu_before
        finally:
            child.terminate()
            child.wait(60)
        stored = count_emails(data)
        if stored != messages:
            raise RuntimeError(f"{messages} messages acknowledged but {stored} stored")
        return report("jmapd", messages, size, connections, elapsed, cpu, read_groups(data))


def cyrus_total(peer: Any) -> int:
    """
    How many Emails the peer's user has, through Cyrus's JMAP (the
    suite's own session discovery and client).
    """
    import asyncio

    from bench.targets import discover

    async def total() -> int:
        session = await discover(peer.spec)
        try:
            [[_, result, _]] = await session.api(
                [["Email/query", {"accountId": session.account_id, "calculateTotal": True, "limit": 1}, "q"]]
            )
            return int(result["total"])
        finally:
            session.close()

    return asyncio.run(total())


def run_cyrus(peer: Any, messages: int, connections: int, size: int, round: int) -> float:
    """
    One run against Cyrus's lmtpd (its UNIX socket, as postfix would use);
    the messages must all be in the user's account afterwards.
    """
    before = cyrus_total(peer)
    bodies = [body(n, size, round) for n in range(messages)]
    elapsed = deliver(os.path.join(peer.workdir, "socket", "lmtp"), bodies, connections, peer.spec.user)
    stored = cyrus_total(peer) - before
    if stored != messages:
        raise RuntimeError(f"Cyrus: {messages} messages acknowledged but {stored} stored")
    return report("cyrus", messages, size, connections, elapsed, None)


def compare(
    messages: int,
    connections: int,
    size: int,
    runs: int,
    workers: int | None,
    blob_store: str | None = None,
    spool: bool = False,
) -> dict[str, float]:
    """
    jmapd and Cyrus interleaved, C{runs} each; print and return the median
    rates.
    """
    from bench.peer import CyrusPeer

    peer = CyrusPeer.start()
    rates: dict[str, list[float]] = {"jmapd": [], "cyrus": []}
    try:
        for round in range(runs):
            rates["jmapd"].append(run(messages, connections, size, workers, round, blob_store, spool))
            rates["cyrus"].append(run_cyrus(peer, messages, connections, size, round))
    finally:
        peer.stop()
    medians = {name: statistics.median(values) for name, values in rates.items()}
    print()
    print("| target | runs (messages/s) | median | vs jmapd |")
    print("|---|---|---:|---:|")
    for name, values in rates.items():
        listed = ", ".join(f"{value:.0f}" for value in values)
        print(f"| {name} | {listed} | {medians[name]:.0f} | {medians[name] / medians['jmapd']:.2f} |")
    return medians


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.lmtp_ingest", description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=1000)
    parser.add_argument("--connections", type=int, default=4)
    parser.add_argument("--size", type=int, default=3000, help="octets per message (default 3000)")
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--workers", type=int, help="worker-pool-size of the server (default: its default)")
    parser.add_argument(
        "--blob-store", choices=["files", "database"], help="blob-store of the server (default: its default)"
    )
    parser.add_argument(
        "--spool",
        action="store_true",
        help="lmtp-spool: true (250 once spooled; the rate counts until the last message is filed)",
    )
    parser.add_argument("--peer", action="store_true", help="also deliver to Cyrus, interleaved, and compare")
    parser.add_argument("--serve", metavar="DATA", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve:
        serve(args.serve, args.port, args.workers, args.blob_store, args.spool)
        return 0
    if args.peer:
        compare(args.messages, args.connections, args.size, args.runs, args.workers, args.blob_store, args.spool)
        return 0
    for round in range(args.runs):
        run(args.messages, args.connections, args.size, args.workers, round, args.blob_store, args.spool)
    return 0


if __name__ == "__main__":
    sys.exit(main())
