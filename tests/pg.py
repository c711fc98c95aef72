"""
PostgreSQL for the tests: a scratch server, a fresh database per test, and
the C{...OnPostgreSQL} variants of the test classes that use a database.

The server: C{make test} (L{tests.runner}) starts one before trial and
stops it after, and passes its URL to every trial process in
C{JMAPD_TEST_DB_URL}.  It is a throw-away cluster made with the Debian
package's C{initdb} (installed with C{apt-get} when missing and we are
root, as on CI), owned by an unprivileged user (PostgreSQL refuses to run
as root), in a temporary directory, on a free port of 127.0.0.1 with
C{trust} authentication, its socket in that directory, without fsync.
A trial run started by hand (C{python -m twisted.trial tests.x}) with no
URL starts its own server the first time a test needs one, if PostgreSQL
is installed.  Where there is none, the PostgreSQL variants are skipped,
saying why; on CI (C{CI} set) the runner fails instead, so a green CI
always means both engines passed.

Each test gets its own database, copied from a template migrated once
per process (C{CREATE DATABASE ... TEMPLATE}), and dropped after the test.
"""

from __future__ import annotations

import atexit
import glob
import itertools
import os
import pwd
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator, MutableMapping
from contextlib import contextmanager
from typing import Any

from twisted.trial.unittest import SkipTest

#: The URL of the running test server's maintenance database.
URL_VARIABLE = "JMAPD_TEST_DB_URL"
#: Set instead of the URL when the runner found no way to run PostgreSQL.
SKIP_VARIABLE = "JMAPD_TEST_DB_SKIP"

SQLITE = "sqlite"
POSTGRESQL = "postgresql"

_UNPRIVILEGED = "nobody"


def _binaries() -> str | None:
    """
    The directory of the newest installed PostgreSQL's server programs.
    """
    found = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"),
        key=lambda p: int(p.split("/")[4]) if p.split("/")[4].isdigit() else 0,
    )
    if found:
        return os.path.dirname(found[-1])
    initdb = shutil.which("initdb")
    return os.path.dirname(initdb) if initdb else None


def install() -> str | None:
    """
    Install the Debian package when the programs are missing and this
    process may (root, with apt-get); return the reason it could not, or
    None.
    """
    if _binaries() is not None:
        return None
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        return "PostgreSQL is not installed (apt-get install postgresql), and this is not a root Debian machine"
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    for command in (["apt-get", "update", "-q"], ["apt-get", "install", "-y", "-q", "postgresql"]):
        result = subprocess.run(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        if result.returncode != 0:
            tail = " ".join(result.stdout.split()[-30:])
            return f"{' '.join(command)} failed ({result.returncode}): {tail}"
    return None if _binaries() is not None else "apt-get installed postgresql, but no initdb was found"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ScratchServer:
    """
    A PostgreSQL cluster in a temporary directory, for tests and
    benchmarks only.

    @ivar durable: keep PostgreSQL's defaults for C{fsync},
        C{synchronous_commit} and C{full_page_writes} (a benchmark
        comparing it with SQLite, which jmapd runs with
        C{synchronous = FULL}); otherwise they are off, because a test
        database need not survive a crash.
    """

    def __init__(self, durable: bool = False) -> None:
        self.durable = durable
        self.directory: str | None = None
        self.port = 0
        self.version = ""
        self._user: str | None = None

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, *command: str) -> str:
        if self._user is not None:
            command = ("runuser", "-u", self._user, "--", *command)
        result = subprocess.run(
            command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=self.directory
        )
        if result.returncode != 0:
            raise RuntimeError(f"{' '.join(command)} failed ({result.returncode}):\n{result.stdout}")
        return result.stdout

    def start(self) -> None:
        """
        initdb and start; raise RuntimeError saying what failed.
        """
        bindir = _binaries()
        if bindir is None:
            raise RuntimeError("PostgreSQL is not installed")
        self.directory = tempfile.mkdtemp(prefix="jmapd-pg-")
        if os.geteuid() == 0:
            # PostgreSQL will not run as root.
            self._user = _UNPRIVILEGED
            entry = pwd.getpwnam(_UNPRIVILEGED)
            os.chown(self.directory, entry.pw_uid, entry.pw_gid)
        data = os.path.join(self.directory, "data")
        self._run(
            os.path.join(bindir, "initdb"), "-D", data, "-U", "postgres", "--auth=trust",
            "--encoding=UTF8", "--locale=C", "--no-sync",
        )
        self.port = _free_port()
        options = " ".join([
            f"-p {self.port}",
            f"-k {self.directory}",
            "-c listen_addresses=127.0.0.1",
            "-c max_connections=300",
            "-c shared_buffers=64MB",
        ])
        if not self.durable:
            options += " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        self._run(
            os.path.join(bindir, "pg_ctl"), "-D", data, "-l", os.path.join(self.directory, "log"),
            "-o", options, "-w", "-t", "60", "start",
        )
        self.version = self._run(os.path.join(bindir, "postgres"), "--version").strip()

    def stop(self) -> None:
        if self.directory is None:
            return
        bindir = _binaries()
        data = os.path.join(self.directory, "data")
        try:
            if bindir is not None and os.path.exists(os.path.join(data, "postmaster.pid")):
                self._run(os.path.join(bindir, "pg_ctl"), "-D", data, "-m", "immediate", "-w", "stop")
        finally:
            shutil.rmtree(self.directory, ignore_errors=True)
            self.directory = None


@contextmanager
def server_for_run(environ: MutableMapping[str, str] | None = None) -> Iterator[tuple[bool, str]]:
    """
    For the runner: a server for the whole run, its URL in C{environ}
    (default C{os.environ}) for the trial processes; yields
    C{(available, what to print)}.  An URL already set is used as it is.
    """
    environ = os.environ if environ is None else environ
    if environ.get(URL_VARIABLE):
        yield True, f"PostgreSQL tests: against {environ[URL_VARIABLE]} (from {URL_VARIABLE})"
        return
    reason = install()
    server = ScratchServer()
    if reason is None:
        try:
            server.start()
        except (RuntimeError, OSError, KeyError) as error:
            reason = f"the scratch server did not start: {error}"
            server.stop()
    if reason is not None:
        environ[SKIP_VARIABLE] = reason
        yield False, f"PostgreSQL tests: SKIPPED: {reason}"
        return
    environ[URL_VARIABLE] = server.url
    try:
        yield True, f"PostgreSQL tests: running on a scratch {server.version} at 127.0.0.1:{server.port}"
    finally:
        del environ[URL_VARIABLE]
        server.stop()


# -- in the trial processes ------------------------------------------------------

_lock = threading.RLock()
_state: dict[str, Any] = {}
_names = itertools.count(1)


def _server_url() -> str:
    """
    The test server's URL: the runner's, or one this process starts.

    @raise SkipTest: there is no PostgreSQL to test on.
    """
    url = os.environ.get(URL_VARIABLE)
    if url:
        return url
    reason = os.environ.get(SKIP_VARIABLE)
    if reason:
        raise SkipTest(f"no PostgreSQL: {reason}")
    with _lock:
        if "skip" in _state:
            raise SkipTest(_state["skip"])
        if "server" not in _state:
            if _binaries() is None:
                _state["skip"] = "no PostgreSQL: not installed (apt-get install postgresql, or run make test)"
                raise SkipTest(_state["skip"])
            server = ScratchServer()
            try:
                server.start()
            except (RuntimeError, OSError, KeyError) as error:
                server.stop()
                _state["skip"] = f"no PostgreSQL: the scratch server did not start: {error}"
                raise SkipTest(_state["skip"]) from None
            atexit.register(server.stop)
            _state["server"] = server
        return str(_state["server"].url)


def _with_database(url: str, name: str) -> str:
    return url.rsplit("/", 1)[0] + "/" + name


def _admin() -> Any:
    import psycopg

    with _lock:
        conn = _state.get("admin")
        if conn is None or conn.closed:
            conn = psycopg.connect(_server_url(), autocommit=True)
            _state["admin"] = conn
        return conn


def _template() -> str:
    """
    The name of this process's migrated template database.
    """
    from jmapd.storage.database import Database
    from jmapd.storage.engines.postgres import PostgreSQLEngine

    name = _state.get("template")
    if name is None:
        name = f"jmapd_template_{os.getpid()}"
        admin = _admin()
        admin.execute(f"DROP DATABASE IF EXISTS {name}")
        admin.execute(f"CREATE DATABASE {name} TEMPLATE template0")
        database = Database(PostgreSQLEngine(_with_database(_server_url(), name)))
        try:
            database.migrate()
        finally:
            database.close()
        _state["template"] = name
    return str(name)


def database_url(testcase: Any, migrated: bool = True) -> str:
    """
    The URL of a new database for this test, dropped after it: a copy of
    the migrated template, or (C{migrated=False}) empty.

    @raise SkipTest: there is no PostgreSQL to test on.
    """
    url = _server_url()
    name = f"jmapd_test_{os.getpid()}_{next(_names)}"
    template = _template() if migrated else "template0"
    admin = _admin()
    admin.execute(f"CREATE DATABASE {name} TEMPLATE {template}")
    # Cleanups run last-added first: the database goes after whatever
    # the test registered later (services, Database.close).
    testcase.addCleanup(lambda: _admin().execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
    return _with_database(url, name)


def engine_of(testcase: Any) -> str:
    """
    The engine a test case runs on: its C{database_engine} attribute.
    """
    return str(getattr(testcase, "database_engine", SQLITE))


def make_engine(testcase: Any, directory: str | None = None, migrated: bool = True, pool_size: int | None = None) -> Any:
    """
    A storage engine for this test: SQLite in a file under C{directory}
    (or a new temporary one), or, for a C{...OnPostgreSQL} class, a fresh
    PostgreSQL database.
    """
    if engine_of(testcase) == POSTGRESQL:
        from jmapd.storage.engines.postgres import PostgreSQLEngine

        return PostgreSQLEngine(database_url(testcase, migrated), node_id="test", pool_size=pool_size)
    from jmapd.storage.engines.sqlite import SQLiteEngine

    if directory is None:
        directory = os.path.abspath(testcase.mktemp())
    os.makedirs(directory, exist_ok=True)
    return SQLiteEngine(os.path.join(directory, "jmapd.sqlite3"))


def config_changes(testcase: Any) -> dict[str, Any]:
    """
    The L{jmapd.config.Config} changes that put a test's server on its
    engine: C{db_url} of a fresh database for PostgreSQL, nothing for
    SQLite.
    """
    if engine_of(testcase) == POSTGRESQL:
        return {"db_url": database_url(testcase)}
    return {}


class OnPostgreSQL:
    """
    Mixed into a test class, runs its tests on PostgreSQL.
    """

    database_engine = POSTGRESQL


def add_postgresql_variants(namespace: dict[str, Any], *classes: type) -> None:
    """
    Add to a test module's C{namespace} a class C{NameOnPostgreSQL} for
    each of C{classes}: the same tests, on a fresh PostgreSQL database.
    """
    module = namespace["__name__"]
    for cls in classes:
        name = f"{cls.__name__}OnPostgreSQL"
        variant = type(name, (OnPostgreSQL, cls), {"__module__": module, "__qualname__": name})
        variant.__doc__ = (cls.__doc__ or "").rstrip() + "\n\n    On PostgreSQL.\n"
        namespace[name] = variant


def main(argv: list[str]) -> int:
    """
    C{python -m tests.pg COMMAND...}: run a command with a scratch server's
    URL in C{JMAPD_TEST_DB_URL} (for trying things by hand).
    """
    with server_for_run() as (available, line):
        sys.stderr.write(line + "\n")
        if not argv:
            return 0 if available else 1
        return subprocess.call(argv)


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
