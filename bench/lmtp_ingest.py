"""
LMTP delivery throughput: C{python -m bench.lmtp_ingest}.

Starts jmapd in a child process (its own data directory under a temporary
directory, LMTP on a free port, default worker pool), creates one account,
then delivers C{--messages} messages (default 1,000) over C{--connections}
concurrent LMTP connections (default 4), each a real socket speaking
pipelined LMTP (MAIL, RCPT, DATA in one write, as postfix does when
PIPELINING is offered), and prints messages per second from the first
connection to the last 250.  Every 250 is checked, and the account must
hold exactly the delivered messages at the end.

The goal (issue 6) is 600 messages/s on a 2-core machine.  With
C{BENCH_PROFILE=FILE} the server's reactor thread is profiled into FILE.
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from typing import Any

TOP = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def body(number: int, size: int) -> bytes:
    """
    A plain-text message of about C{size} octets, with its own subject and
    Message-ID.
    """
    head = (
        f"From: Sender {number} <sender{number % 50}@example.org>\r\n"
        f"To: Alice <alice@example.com>\r\n"
        f"Subject: Benchmark message {number}\r\n"
        f"Date: Mon, 02 Oct 2023 10:00:00 +0000\r\n"
        f"Message-ID: <bench.{number}.{os.getpid()}@example.org>\r\n"
        f"Content-Type: text/plain; charset=utf-8\r\n\r\n"
    )
    line = "The quick brown fox jumps over the lazy dog, again and again.\r\n"
    text = head + line * max(1, (size - len(head)) // len(line))
    return text.encode("ascii")


def serve(data: str, port: int, workers: int | None = None) -> None:
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


def client(port: int, messages: list[bytes], errors: list[str]) -> None:
    """
    Deliver C{messages} on one connection, pipelining each transaction.
    """
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        f = sock.makefile("rb")
        _read_reply(f)
        sock.sendall(b"LHLO bench.example.org\r\n")
        _read_reply(f)
        for data in messages:
            sock.sendall(b"MAIL FROM:<bob@example.org>\r\nRCPT TO:<alice@example.com>\r\nDATA\r\n")
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
    The CPU seconds (user and system) the server process has used so far,
    where C{/proc} says (Linux); C{None} elsewhere.  With the start-up
    excluded (see L{run}) it tells, unlike the rate, how much work a
    message costs whatever else the machine is doing.
    """
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rpartition(")")[2].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def count_emails(data: str) -> int:
    sys.path.insert(0, TOP)
    from jmapd.config import default_config
    from jmapd.storage import open_database

    database = open_database(default_config(db_path=data))
    try:
        return int(database.run_sync(lambda txn: txn.fetchvalue("SELECT count(*) FROM emails", (), 0)))
    finally:
        database.close()


def run(messages: int, connections: int, size: int, workers: int | None = None) -> float:
    with tempfile.TemporaryDirectory(dir=TOP) as directory:
        data = os.path.join(directory, "data")
        port = free_port()
        child = subprocess.Popen(
            [sys.executable, "-m", "bench.lmtp_ingest", "--serve", data, "--port", str(port)]
            + ([] if workers is None else ["--workers", str(workers)]),
            cwd=TOP,
        )
        try:
            wait_for(port)
            bodies = [body(n, size) for n in range(messages)]
            shares = [bodies[i::connections] for i in range(connections)]
            errors: list[str] = []
            threads = [threading.Thread(target=client, args=(port, share, errors)) for share in shares]
            cpu_before = server_cpu(child.pid)
            started = time.perf_counter()
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            elapsed = time.perf_counter() - started
            cpu_after = server_cpu(child.pid)
            cpu = None if cpu_before is None or cpu_after is None else cpu_after - cpu_before
        finally:
            child.terminate()
            child.wait(60)
        if errors:
            raise RuntimeError(f"{len(errors)} deliveries failed, first: {errors[0]}")
        stored = count_emails(data)
        if stored != messages:
            raise RuntimeError(f"{messages} messages acknowledged but {stored} stored")
        rate = messages / elapsed
        print(
            f"{messages} messages of {size} octets over {connections} LMTP connections:"
            f" {elapsed:.2f} s, {rate:.0f} messages/s"
            + ("" if cpu is None else f", server CPU {cpu * 1000 / messages:.2f} ms per message")
        )
        return rate


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.lmtp_ingest", description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=1000)
    parser.add_argument("--connections", type=int, default=4)
    parser.add_argument("--size", type=int, default=3000, help="octets per message (default 3000)")
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--workers", type=int, help="worker-pool-size of the server (default: its default)")
    parser.add_argument("--serve", metavar="DATA", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve:
        serve(args.serve, args.port, args.workers)
        return 0
    for _ in range(args.runs):
        run(args.messages, args.connections, args.size, args.workers)
    return 0


if __name__ == "__main__":
    sys.exit(main())
