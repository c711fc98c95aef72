# -*- test-case-name: tests.bench.test_targets -*-
"""
Benchmark targets: any JMAP server given by its session URL and a user's
credentials, and the servers the suite starts itself (a jmapd with a
fresh data directory, the ceiling servers of L{bench.ceiling}).

A target is driven only through what its Session says (RFC 8620 section
2): the API and upload URLs are taken from it, resolved against the
session URL because Cyrus 3.6 sends relative ones, and the account is the
primary account for mail (Cyrus's account id is the user name, jmapd's is
an opaque id).
"""

from __future__ import annotations

import base64
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from typing import Any
from urllib.parse import urljoin, urlsplit

import orjson
from attrs import define, field, frozen

from bench.http import Connection, HTTPError, Response, build_request

__all__ = ["CORE", "MAIL", "Session", "TargetSpec", "parse_target", "discover", "JmapdProcess"]

CORE = "urn:ietf:params:jmap:core"
MAIL = "urn:ietf:params:jmap:mail"

#: The account the suite creates in its own jmapd (and in Cyrus).
BENCH_USER = "bench"


class TargetError(Exception):
    """
    A target cannot be used (no session, wrong credentials, a server
    that does not start); the message says which and why.
    """


@frozen
class TargetSpec:
    """
    What C{--target NAME=URL,USER,PASSWORD} says.

    @ivar echo_only: a ceiling server: it answers Core/echo and nothing
        else, so only the core_echo workload runs against it.
    """

    name: str
    url: str
    user: str
    password: str
    echo_only: bool = False


def parse_target(text: str) -> TargetSpec:
    """
    Parse C{NAME=URL,USER,PASSWORD}; the password may contain commas.
    """
    name, sep, rest = text.partition("=")
    parts = rest.split(",", 2)
    if not sep or not name or len(parts) != 3 or not all(parts):
        raise ValueError(f"expected NAME=URL,USER,PASSWORD, got {text!r}")
    url, user, password = parts
    if urlsplit(url).scheme != "http":
        raise ValueError(f"{name}: only http:// session URLs are supported, got {url!r}")
    return TargetSpec(name, url, user, password)


@define
class Session:
    """
    A target as the workloads see it: where to send requests, as whom,
    for which account, and a connection for setup calls.
    """

    spec: TargetSpec
    host: str
    port: int
    api_path: str
    upload_path: str
    account_id: str
    capabilities: dict[str, Any]
    authorization: str
    _connection: Connection | None = field(default=None)
    #: More nodes serving the same account from the same database (a
    #: multi-node jmapd): the load connections are spread round-robin
    #: over this session and these (see L{bench.load.spread}); setup
    #: requests go to this session only.
    other_nodes: list[Session] = field(factory=list)

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def nodes(self) -> list[Session]:
        """
        Every node the load connections go to, this session first.
        """
        return [self, *self.other_nodes]

    @property
    def has_mail(self) -> bool:
        return MAIL in self.capabilities

    @property
    def max_concurrent_requests(self) -> int | None:
        value = self.capabilities.get(CORE, {}).get("maxConcurrentRequests")
        return value if isinstance(value, int) else None

    def api_request(self, body: bytes) -> bytes:
        """
        The raw HTTP request that POSTs C{body} to the API.
        """
        return build_request("POST", self.api_path, f"{self.host}:{self.port}", {
            "Authorization": self.authorization,
            "Content-Type": "application/json",
            "Accept": "application/json",
        }, body)

    def upload_request(self, data: bytes, content_type: str = "message/rfc822") -> bytes:
        return build_request("POST", self.upload_path, f"{self.host}:{self.port}", {
            "Authorization": self.authorization,
            "Content-Type": content_type,
        }, data)

    async def send(self, raw: bytes) -> Response:
        """
        Send a setup request on the session's own keep-alive connection.
        """
        if self._connection is None or self._connection.closed:
            self._connection = await Connection.open(self.host, self.port)
        return await self._connection.request(raw)

    async def api(self, calls: list[Any], using: tuple[str, ...] = (CORE, MAIL)) -> list[Any]:
        """
        Run a setup request and return its methodResponses; anything but
        a 200 answer is a L{TargetError}.
        """
        body = orjson.dumps({"using": list(using), "methodCalls": calls})
        response = await self.send(self.api_request(body))
        if response.status != 200:
            raise TargetError(f"{self.name}: API answered {response.status}: {response.body[:300]!r}")
        return orjson.loads(response.body)["methodResponses"]  # type: ignore[no-any-return]

    async def upload(self, data: bytes, content_type: str = "message/rfc822") -> str:
        response = await self.send(self.upload_request(data, content_type))
        if response.status not in (200, 201):
            raise TargetError(f"{self.name}: upload answered {response.status}: {response.body[:300]!r}")
        return str(orjson.loads(response.body)["blobId"])

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None


def basic_authorization(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


async def discover(spec: TargetSpec) -> Session:
    """
    GET the session (following redirects: Cyrus answers
    C{/.well-known/jmap} with a 301) and build a L{Session}.
    """
    authorization = basic_authorization(spec.user, spec.password)
    url = spec.url
    for _ in range(5):
        parts = urlsplit(url)
        if parts.scheme != "http" or parts.hostname is None:
            raise TargetError(f"{spec.name}: cannot follow {url!r} (plain http only)")
        path = parts.path or "/"
        if parts.query:
            path += "?" + parts.query
        host, port = parts.hostname, parts.port or 80
        try:
            connection = await Connection.open(host, port)
            try:
                response = await connection.request(build_request(
                    "GET", path, f"{host}:{port}", {"Authorization": authorization, "Accept": "application/json"}
                ))
            finally:
                connection.close()
        except (OSError, HTTPError) as error:
            raise TargetError(f"{spec.name}: cannot fetch the session at {url}: {error}") from None
        if response.status in (301, 302, 303, 307, 308) and b"location" in response.headers:
            url = urljoin(url, response.headers[b"location"].decode())
            continue
        if response.status != 200:
            raise TargetError(f"{spec.name}: the session at {url} answered {response.status}: {response.body[:200]!r}")
        break
    else:
        raise TargetError(f"{spec.name}: too many redirects from {spec.url}")
    session = orjson.loads(response.body)
    api = urlsplit(urljoin(url, session["apiUrl"]))
    primary = session.get("primaryAccounts", {})
    account_id = primary.get(MAIL) or primary.get(CORE) or next(iter(session.get("accounts", {})), None)
    if account_id is None:
        raise TargetError(f"{spec.name}: the session lists no account")
    upload_template = session.get("uploadUrl", "")
    upload = urlsplit(urljoin(url, upload_template.replace("{accountId}", account_id)))
    if (api.hostname, api.port or 80) != (host, port):
        raise TargetError(f"{spec.name}: apiUrl {session['apiUrl']} is on another host than the session")
    return Session(
        spec=spec,
        host=host,
        port=port,
        api_path=api.path + (f"?{api.query}" if api.query else ""),
        upload_path=upload.path,
        account_id=account_id,
        capabilities=session.get("capabilities", {}),
        authorization=authorization,
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _pinned(cpus: set[int] | None) -> Any:
    if not cpus:
        return None

    def pin() -> None:
        os.sched_setaffinity(0, cpus)

    return pin


def wait_for_port(port: int, process: subprocess.Popen[Any] | None, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if process is not None and process.poll() is not None:
            raise TargetError(f"{what} exited with status {process.returncode} before listening")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise TargetError(f"{what} did not listen on 127.0.0.1:{port} within {timeout:.0f} s") from None
            time.sleep(0.05)


def _bin(name: str) -> str:
    """
    A console script of this virtualenv (twistd, jmapd-admin).
    """
    candidate = os.path.join(os.path.dirname(sys.executable), name)
    return candidate if os.path.exists(candidate) else (shutil.which(name) or name)


def _checkout_environment() -> dict[str, str]:
    """
    The environment of a server subprocess: this checkout first on the
    path, so the server runs the code being measured and not an older
    installed copy, and no C{JMAPD_*} variables: they would override the
    generated configuration's keys, and one that names no key (such as
    the test runner's C{JMAPD_TEST_DB_URL}) stops start-up.
    """
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    environ = {name: value for name, value in os.environ.items() if not name.startswith("JMAPD_")}
    environ["PYTHONPATH"] = os.pathsep.join(filter(None, [root, environ.get("PYTHONPATH")]))
    return environ


#: What the suite's own jmapd runs with, beyond the port and data
#: directory: limits that would otherwise turn a load test into 429s
#: (1000 requests a minute per user is right for a real server and wrong
#: for a benchmark), warn-level logging, because twistd's text log of
#: one line per request would be measured too, and no LMTP listener
#: (nothing here delivers by LMTP, and its fixed default port would stop
#: a second jmapd, or one started while another runs on the machine).
BENCH_CONFIG = {
    "rate-limit-authenticated": "1000000000/1",
    "rate-limit-auth": "1000000/1",
    "max-concurrent-requests": 256,
    "max-concurrent-uploads": 64,
    "mail-import-max-items": 50,
    "lmtp-port": 0,
}


@define
class JmapdProcess:
    """
    A jmapd the suite started: C{twistd -n jmapd} in a subprocess, with a
    generated configuration and a fresh data directory under C{workdir},
    and one account with a password.
    """

    process: subprocess.Popen[bytes]
    workdir: str
    port: int
    spec: TargetSpec
    log_path: str

    @classmethod
    def start(cls, name: str = "jmapd", workdir: str | None = None, cpus: set[int] | None = None,
              log_level: str = "warn", settings: dict[str, Any] | None = None,
              profile: str | None = None, password: str | None = None) -> JmapdProcess:
        """
        @param settings: configuration keys beyond the bench's own (such
            as C{db-url}); they win over L{BENCH_CONFIG}.
        @param profile: write cProfile statistics of the whole server run
            to this file (twistd's C{--profile}), for C{pstats}.
        @param password: the password of the bench account when it exists
            already, because another node on the same C{db-url} made it;
            without it the account is created with a new password.
        """
        workdir = workdir or tempfile.mkdtemp(prefix="jmapd-bench-")
        port = free_port()
        config = {
            "jmap-bind-addr": "127.0.0.1",
            "jmap-port": port,
            "db-path": os.path.join(workdir, "data"),
            "log-level": log_level,
            **BENCH_CONFIG,
            **(settings or {}),
        }
        config_path = os.path.join(workdir, "jmapd.yaml")
        with open(config_path, "w") as f:
            for key, value in config.items():
                f.write(f"{key}: {orjson.dumps(value).decode()}\n")
        environ = _checkout_environment()
        if password is None:
            password = secrets.token_urlsafe(12)
            admin = subprocess.run(
                [sys.executable, "-c", "import sys; from jmapd.admin import main; sys.exit(main())",
                 "--config", config_path, "account", "add", BENCH_USER, "--email", f"{BENCH_USER}@example.test",
                 "--password-stdin"],
                input=(password + "\n").encode(), env=environ, capture_output=True,
            )
            if admin.returncode != 0:
                raise TargetError(f"jmapd-admin account add failed: {admin.stderr.decode().strip()}")
        log_path = os.path.join(workdir, "twistd.log")
        profiling = ["--profile", profile, "--profiler", "cprofile", "--savestats"] if profile else []
        process = subprocess.Popen(
            [_bin("twistd"), "--pidfile=", "--logfile", log_path, *profiling, "-n", "jmapd", "--config", config_path],
            env=environ, cwd=workdir, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            preexec_fn=_pinned(cpus),
        )
        try:
            wait_for_port(port, process, 30, "jmapd")
        except TargetError as error:
            process.kill()
            stderr = process.communicate()[1].decode(errors="replace").strip()
            raise TargetError(f"{error}: {stderr[-2000:]}") from None
        spec = TargetSpec(name, f"http://127.0.0.1:{port}/.well-known/jmap", BENCH_USER, password)
        return cls(process, workdir, port, spec, log_path)

    def stop(self) -> None:
        """
        Stop the server and remove its data directory.
        """
        stop_process(self.process)
        shutil.rmtree(self.workdir, ignore_errors=True)


def stop_process(process: subprocess.Popen[Any], timeout: float = 10) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@define
class CeilingProcess:
    """
    A L{bench.ceiling} server in a subprocess.
    """

    process: subprocess.Popen[bytes]
    spec: TargetSpec

    @classmethod
    def start(cls, name: str, thread: bool, cpus: set[int] | None = None) -> CeilingProcess:
        port = free_port()
        password = "ceiling"
        command = [sys.executable, "-m", "bench.ceiling", "--port", str(port), "--user", "bench",
                   "--password", password]
        if thread:
            command.append("--thread")
        process = subprocess.Popen(command, env=_checkout_environment(), stdout=subprocess.DEVNULL,
                                   stderr=subprocess.PIPE, preexec_fn=_pinned(cpus))
        wait_for_port(port, process, 20, name)
        return cls(process, TargetSpec(name, f"http://127.0.0.1:{port}/.well-known/jmap", "bench", password,
                                       echo_only=True))

    def stop(self) -> None:
        stop_process(self.process)
