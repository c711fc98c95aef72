"""
Idle push connections: what one costs, and how fast a change reaches them.

Starts a jmapd server (push wired in) in a child process on 127.0.0.1,
opens N idle EventSource and N idle WebSocket connections (push enabled)
to it from this process, and reports

- the server's RSS growth per connection (VmRSS after / before, divided by
  the connections opened; the goal is at most 30 KB), and
- the time from sending one API write (Mailbox/set, or a Core write when
  Mail is not registered) to its StateChange on the last connection.

    python -m bench.push_idle [--connections 2000] [--json]

Connections are opened in batches, each waited for, so the listen backlog
never overflows; the child process is stopped at the end.  Only loopback
addresses are used.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from typing import Any

# Run as a script, bench/ would come first on sys.path and its http.py
# would hide the standard library's http package.
_HERE = os.path.dirname(os.path.abspath(__file__))
_TOP = os.path.dirname(_HERE)
if sys.path and os.path.abspath(sys.path[0] or ".") == _HERE:
    sys.path[0] = _TOP

ACCOUNT = "bench"
PASSWORD = "bench password"
BATCH = 40


def raise_fd_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")


# -- the server (child process) --------------------------------------------


def serve(data_dir: str) -> None:
    """
    Run jmapd with push on a free port; print "READY <port> <write>".
    """
    raise_fd_limit()
    from twisted.internet import reactor

    import jmapd.service
    from jmapd import push
    from jmapd.auth.passwords import hash_password
    from jmapd.config import RateLimit, default_config
    from jmapd.protocol.engine import CORE
    from jmapd.push.hub import hub_for
    from jmapd.storage import accounts, changelog
    from jmapd.storage.ids import new_id

    registry = jmapd.service.build_registry()
    if "PushSubscription/get" not in registry.methods:
        push.register(registry)
    write = "Mailbox/set" if "Mailbox/set" in registry.methods else "Bench/touch"

    @registry.method("Bench/touch", CORE, write=True)
    def touch(ctx: Any, arguments: dict[str, Any]) -> dict[str, Any]:
        modseq = changelog.record_change(ctx.txn, ctx.principal.account_id, "Email", new_id("x"), changelog.CREATED)
        return {"state": str(modseq)}

    original = jmapd.service.build_root

    def build_root(env: Any, authenticator: Any, extra: Any = None) -> Any:
        children = dict(extra or {})
        if b"eventsource" not in children:
            children.update(push.install(env, reactor, authenticator))
        return original(env, authenticator, children)

    jmapd.service.build_root = build_root
    config = default_config(
        jmap_port=0,
        jmap_bind_addr="127.0.0.1",
        db_path=data_dir,
        log_level="warn",
        rate_limit_authenticated=RateLimit(10_000_000, 60.0),
    )
    service = jmapd.service.makeService(config, reactor, registry=registry)
    service.startService()
    env = service.env
    env.database.run_sync(accounts.add_account, ACCOUNT, hash_password(PASSWORD), [], write=True)
    if not _has_named(service, "push"):
        push.service(env, reactor).setServiceParent(service)
    hub = hub_for(env)
    assert hub is not None
    publish = hub.notifier.publish

    def timed_publish(changed: Any) -> None:
        # How long the fan-out itself takes on the server's reactor thread.
        started = time.perf_counter()
        publish(changed)
        print(f"PUBLISHED {(time.perf_counter() - started) * 1000:.1f}", flush=True)

    hub.notifier.publish = timed_publish

    def listening(port: Any) -> None:
        print(f"READY {port.getHost().port} {write}", flush=True)

    service.web.listening.addCallback(listening)
    reactor.addSystemEventTrigger("before", "shutdown", service.stopService)
    reactor.run()


def _has_named(service: Any, name: str) -> bool:
    try:
        service.getServiceNamed(name)
    except KeyError:
        return False
    return True


# -- the clients -------------------------------------------------------------


def run_clients(port: int, connections: int, server_pid: int, write: str) -> dict[str, Any]:
    from twisted.internet import reactor
    from twisted.internet.defer import Deferred, DeferredList, ensureDeferred
    from twisted.internet.protocol import ClientFactory, Protocol

    authorization = b"Basic " + base64.b64encode(f"{ACCOUNT}:{PASSWORD}".encode())
    received: list[float] = []

    class EventSourceClient(Protocol):
        """
        A bare HTTP/1.1 event-stream reader: ready at the first message,
        done at the first state event.
        """

        def __init__(self) -> None:
            self.ready: Deferred[None] = Deferred()
            self.buffer = b""
            self.got_event = False

        def connectionMade(self) -> None:
            self.transport.write(
                b"GET /jmap/eventsource/?types=*&closeafter=no&ping=0 HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                b"Authorization: " + authorization + b"\r\n\r\n"
            )

        def dataReceived(self, data: bytes) -> None:
            self.buffer += data
            if not self.ready.called and b"\r\n\r\n" in self.buffer and b"\n\n" in self.buffer.split(b"\r\n\r\n", 1)[1]:
                if not self.buffer.startswith(b"HTTP/1.1 200"):
                    raise RuntimeError(self.buffer[:200])
                self.buffer = b""
                self.ready.callback(None)
            elif self.ready.called and not self.got_event and b"event: state" in self.buffer:
                self.got_event = True
                received.append(time.perf_counter())
                self.buffer = b""

    class WebSocketClient(Protocol):
        """
        A bare RFC 6455 client: upgrade, enable push, answer pings; ready
        once an echo request sent after the enable is answered.
        """

        def __init__(self) -> None:
            self.ready: Deferred[None] = Deferred()
            self.buffer = b""
            self.upgraded = False
            self.got_event = False

        def connectionMade(self) -> None:
            key = base64.b64encode(os.urandom(16))
            self.transport.write(
                b"GET /jmap/ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: jmap\r\nSec-WebSocket-Key: " + key + b"\r\n"
                b"Authorization: " + authorization + b"\r\n\r\n"
            )

        def send_frame(self, opcode: int, payload: bytes) -> None:
            mask = os.urandom(4)
            header = bytes([0x80 | opcode])
            if len(payload) < 126:
                header += bytes([0x80 | len(payload)])
            else:
                header += bytes([0x80 | 126]) + len(payload).to_bytes(2, "big")
            masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
            self.transport.write(header + mask + masked)

        def dataReceived(self, data: bytes) -> None:
            self.buffer += data
            if not self.upgraded:
                if b"\r\n\r\n" not in self.buffer:
                    return
                head, self.buffer = self.buffer.split(b"\r\n\r\n", 1)
                if not head.startswith(b"HTTP/1.1 101"):
                    raise RuntimeError(head[:200])
                self.upgraded = True
                self.send_frame(1, b'{"@type":"WebSocketPushEnable","dataTypes":null}')
                self.send_frame(
                    1, b'{"@type":"Request","id":"r","using":["urn:ietf:params:jmap:core"],"methodCalls":[]}'
                )
            while len(self.buffer) >= 2:
                opcode = self.buffer[0] & 0x0F
                length = self.buffer[1] & 0x7F
                start = 2
                if length == 126:
                    length, start = int.from_bytes(self.buffer[2:4], "big"), 4
                elif length == 127:
                    length, start = int.from_bytes(self.buffer[2:10], "big"), 10
                if len(self.buffer) < start + length:
                    return
                payload, self.buffer = self.buffer[start : start + length], self.buffer[start + length :]
                if opcode == 9:
                    self.send_frame(10, payload)
                elif opcode == 1 and b'"Response"' in payload and not self.ready.called:
                    self.ready.callback(None)
                elif opcode == 1 and b'"StateChange"' in payload and not self.got_event:
                    self.got_event = True
                    received.append(time.perf_counter())

    clients: list[Any] = []

    async def open_batch(kind: type, count: int) -> None:
        batch = []
        for _ in range(count):
            client = kind()
            factory = ClientFactory.forProtocol(lambda client=client: client)
            reactor.connectTCP("127.0.0.1", port, factory)
            batch.append(client)
        await DeferredList([c.ready for c in batch], fireOnOneErrback=True)
        clients.extend(batch)

    async def main() -> dict[str, Any]:
        # Warm up (imports, caches, the verified-credentials entry) before the baseline.
        await open_batch(EventSourceClient, 5)
        await open_batch(WebSocketClient, 5)
        before = rss_kib(server_pid)
        started = time.perf_counter()
        for kind in (EventSourceClient, WebSocketClient):
            left = connections
            while left > 0:
                await open_batch(kind, min(BATCH, left))
                left -= BATCH
        opened_in = time.perf_counter() - started
        after = rss_kib(server_pid)
        total = 2 * connections
        import treq

        body = {"using": ["urn:ietf:params:jmap:core", "urn:ietf:params:jmap:mail"], "methodCalls": []}
        if write == "Mailbox/set":
            body["methodCalls"] = [["Mailbox/set", {"accountId": await account_id(), "create": {"m": {"name": "bench"}}}, "w"]]
        else:
            body["methodCalls"] = [["Bench/touch", {}, "w"]]
        sent = time.perf_counter()
        response = await treq.post(
            f"http://127.0.0.1:{port}/jmap/", json.dumps(body).encode(), headers={b"authorization": [authorization]},
            persistent=False,
        )
        await response.content()
        while len(received) < len(clients):
            d: Deferred[None] = Deferred()
            reactor.callLater(0.01, d.callback, None)
            await d
            if time.perf_counter() - sent > 60:
                break
        latency = max(received) - sent if received else None
        return {
            "connections": {"eventsource": connections, "websocket": connections},
            "rss_before_kib": before,
            "rss_after_kib": after,
            "bytes_per_connection": round((after - before) * 1024 / total),
            "goal_bytes_per_connection": 30 * 1024,
            "open_seconds": round(opened_in, 2),
            "write": write,
            "events_received": len(received),
            "write_to_last_event_ms": None if latency is None else round(latency * 1000, 1),
        }

    async def account_id() -> str:
        import treq

        response = await treq.get(
            f"http://127.0.0.1:{port}/.well-known/jmap", headers={b"authorization": [authorization]}, persistent=False
        )
        session = json.loads(await response.content())
        return str(next(iter(session["accounts"])))

    result: dict[str, Any] = {}

    def done(value: Any) -> None:
        result["value"] = value
        for client in clients:
            client.transport.loseConnection()
        reactor.callLater(0.5, reactor.stop)

    ensureDeferred(main()).addBoth(done)
    reactor.run()
    value = result["value"]
    if hasattr(value, "raiseException"):
        value.raiseException()
    return value  # type: ignore[no-any-return]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--connections", type=int, default=2000, help="EventSource and WebSocket connections, each")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    parser.add_argument("--serve", metavar="DIR", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve)
        return 0
    raise_fd_limit()
    data = tempfile.mkdtemp(prefix="jmapd-push-bench-")
    child = subprocess.Popen(
        [sys.executable, "-m", "bench.push_idle", "--serve", data], stdout=subprocess.PIPE, text=True, cwd=_TOP
    )
    try:
        assert child.stdout is not None
        line = child.stdout.readline().split()
        if not line or line[0] != "READY":
            raise SystemExit("the server did not start")
        result = run_clients(int(line[1]), args.connections, child.pid, line[2])
    finally:
        child.terminate()
        output = child.communicate(timeout=30)[0] or ""
        shutil.rmtree(data, ignore_errors=True)
    fan_out = [float(line.split()[1]) for line in output.splitlines() if line.startswith("PUBLISHED ")]
    result["server_fan_out_ms"] = max(fan_out) if fan_out else None
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(
            f"{2 * args.connections} idle push connections: {result['bytes_per_connection']} bytes each"
            f" (goal {result['goal_bytes_per_connection']}); {result['write']} to the event on the last"
            f" connection: {result['write_to_last_event_ms']} ms ({result['events_received']} events;"
            f" the server's fan-out took {result['server_fan_out_ms']} ms)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
