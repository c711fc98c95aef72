"""
Tests for L{jmapd.tap} and the twistd plugin: C{twistd -n jmapd --config
FILE [--set key=value]...}.
"""

from __future__ import annotations

import os
from typing import Any

from twisted.application.service import IServiceMaker, MultiService
from twisted.internet import reactor
from twisted.internet.defer import ensureDeferred
from twisted.logger import FilteringLogObserver, LogLevel, globalLogPublisher
from twisted.plugin import getPlugins
from twisted.python.usage import UsageError
from twisted.trial.unittest import TestCase

import twisted.plugins
from jmapd import tap
from jmapd.service import JMAPService
from tests.support import Server, ServerTestCase


class PluginTests(TestCase):
    """
    twistd finds jmapd through Twisted's plugin system.
    """

    def test_discovered(self) -> None:
        """
        Exactly one L{IServiceMaker} plugin is named C{jmapd}, and it uses
        L{jmapd.tap}'s options and service maker.
        """
        makers = [maker for maker in getPlugins(IServiceMaker, twisted.plugins) if maker.tapname == "jmapd"]
        self.assertEqual(len(makers), 1)
        [maker] = makers
        self.assertIs(maker.options, tap.Options)
        self.assertIs(maker.makeService, tap.makeService)
        self.assertTrue(maker.description)


class OptionsTestCase(TestCase):
    """
    Helpers: a configuration file in a fresh directory, and an environment
    the options read instead of the process's.
    """

    def setUp(self) -> None:
        self.directory = os.path.abspath(self.mktemp())
        os.makedirs(self.directory)
        # The options read os.environ: give them one without the
        # process's JMAPD_* variables, which a test can fill.
        self.environ: dict[str, str] = {
            name: value for name, value in os.environ.items() if not name.startswith("JMAPD_")
        }
        self.patch(os, "environ", self.environ)

    def write_config(self, text: str, name: str = "jmapd.yaml") -> str:
        path = os.path.join(self.directory, name)
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)
        return path

    def parse(self, *argv: str) -> tap.Options:
        options = tap.Options()
        options.parseOptions(list(argv))
        return options


class OptionsTests(OptionsTestCase):
    """
    L{tap.Options}: where the configuration comes from, and how problems
    are reported.
    """

    def test_configRequired(self) -> None:
        """
        Without --config and without JMAPD_CONFIG, parsing fails with a
        L{UsageError} that names both.
        """
        error = self.assertRaises(UsageError, self.parse)
        self.assertIn("--config", str(error))
        self.assertIn("JMAPD_CONFIG", str(error))

    def test_emptyEnvironmentVariable(self) -> None:
        """
        An empty JMAPD_CONFIG counts as unset, rather than naming the
        working directory.
        """
        self.environ["JMAPD_CONFIG"] = ""
        error = self.assertRaises(UsageError, self.parse)
        self.assertIn("--config", str(error))

    def test_config(self) -> None:
        """
        --config names the file; relative paths in it resolve against its
        directory.
        """
        path = self.write_config("db-path: data\njmap-port: 8123\n")
        options = self.parse("--config", path)
        self.assertEqual(options.config.config_path, path)
        self.assertEqual(options.config.jmap_port, 8123)
        self.assertEqual(options.config.db_path, os.path.join(self.directory, "data"))

    def test_everyProblem(self) -> None:
        """
        A file with several errors gives one L{UsageError} listing all of
        them, so an operator fixes the file in one pass.
        """
        path = self.write_config("jmap-port: abc\nlog-level: loud\njmap-prot: 80\n")
        error = str(self.assertRaises(UsageError, self.parse, "--config", path))
        self.assertIn(path, error)
        self.assertIn("jmap-port", error)
        self.assertIn("'abc'", error)
        self.assertIn("log-level", error)
        self.assertIn("'loud'", error)
        self.assertIn("jmap-prot: unknown key", error)

    def test_missingFile(self) -> None:
        """
        A --config file that does not exist is a L{UsageError}.
        """
        error = self.assertRaises(
            UsageError, self.parse, "--config", os.path.join(self.directory, "nope.yaml")
        )
        self.assertIn("cannot read the configuration file", str(error))

    def test_setOverrides(self) -> None:
        """
        --set overrides the file, may be given several times, and the last
        one for a key wins.
        """
        path = self.write_config("jmap-port: 8123\nlog-level: warn\n")
        options = self.parse(
            "--config", path, "--set", "jmap-port=9000", "--set", "log-level=debug", "--set", "jmap-port=9001"
        )
        self.assertEqual(options["set"], ["jmap-port=9000", "log-level=debug", "jmap-port=9001"])
        self.assertEqual(options.config.jmap_port, 9001)
        self.assertEqual(options.config.log_level, "debug")

    def test_setProblem(self) -> None:
        """
        A bad --set value is a L{UsageError} saying it came from --set.
        """
        path = self.write_config("")
        error = str(self.assertRaises(UsageError, self.parse, "--config", path, "--set", "jmap-port=x"))
        self.assertIn("jmap-port (from --set)", error)

    def test_environmentFallback(self) -> None:
        """
        Without --config, JMAPD_CONFIG names the file; it is not taken for
        a configuration key, while other JMAPD_* variables still override
        keys.
        """
        path = self.write_config("jmap-port: 8123\n")
        self.environ["JMAPD_CONFIG"] = path
        self.environ["JMAPD_LOG_LEVEL"] = "error"
        options = self.parse()
        self.assertEqual(options.config.config_path, path)
        self.assertEqual(options.config.jmap_port, 8123)
        self.assertEqual(options.config.log_level, "error")

    def test_configOptionWins(self) -> None:
        """
        --config is used even when JMAPD_CONFIG names another file.
        """
        chosen = self.write_config("jmap-port: 8123\n")
        self.environ["JMAPD_CONFIG"] = self.write_config("jmap-port: 9999\n", "other.yaml")
        options = self.parse("--config", chosen)
        self.assertEqual(options.config.jmap_port, 8123)


class MakeServiceTests(OptionsTestCase, ServerTestCase):
    """
    L{tap.makeService}: what twistd runs.
    """

    def make(self, *settings: str) -> tap._TwistdService:
        path = self.write_config("db-path: data\njmap-bind-addr: 127.0.0.1\nworker-pool-size: 1\nlmtp-port: 0\n")
        argv = ["--config", path]
        for setting in settings:
            argv += ["--set", setting]
        top = tap.makeService(self.parse(*argv))
        self.addCleanup(top.jmap.env.database.close)
        return top

    def test_service(self) -> None:
        """
        The result is a L{MultiService} holding the jmapd service, built
        from the parsed configuration.
        """
        top = self.make("jmap-port=0", "log-level=warn")
        self.assertIsInstance(top, MultiService)
        self.assertIsInstance(top.jmap, JMAPService)
        self.assertIn(top.jmap, list(top))
        self.assertEqual(top.jmap.env.config.log_level, "warn")
        self.assertIs(top.jmap.reactor, reactor)
        self.assertFalse(top.running)

    def test_runAndStop(self) -> None:
        """
        Started as twistd starts it (privileged start, then start), the
        service answers HTTP with log-level applied to the global observers;
        stopped, it restores them.
        """

        async def run() -> None:
            top = self.make("jmap-port=0")
            observers = list(globalLogPublisher._observers)
            top.privilegedStartService()
            top.startService()
            self.addCleanup(lambda: top.stopService() if top.running else None)
            await top.jmap.web.listening
            self.assertTrue(
                all(isinstance(o, FilteringLogObserver) for o in globalLogPublisher._observers)
            )
            server = Server(top.jmap)
            server.add_account("alice")
            response = await server.api([["Core/echo", {}, "c0"]])
            self.assertEqual(response["methodResponses"], [["Core/echo", {}, "c0"]])
            await top.stopService()
            self.assertEqual(set(globalLogPublisher._observers), set(observers))
            self.assertTrue(top.jmap.env.workers.pool.joined)

        return ensureDeferred(run())

    def test_startupLinesFiltered(self) -> None:
        """
        log-level and node-id apply from the first line the listeners log
        while they bind in C{privilegedStartService}: at warn, C{JMAP
        listening on ...} (info) is not written, and the jmap-url warning
        is, labelled with the node.
        """

        async def run() -> None:
            top = self.make("jmap-port=0", "log-level=warn", "node-id=node-t")
            events: list[dict[str, Any]] = []
            globalLogPublisher.addObserver(events.append)
            self.addCleanup(globalLogPublisher.removeObserver, events.append)
            top.privilegedStartService()
            top.startService()
            self.addCleanup(lambda: top.stopService() if top.running else None)
            await top.jmap.web.listening
            await top.stopService()
            service_events = [e for e in events if e.get("log_namespace") == "jmapd.service"]
            self.assertEqual(
                [(e["log_level"], e.get("log_system")) for e in service_events],
                [(LogLevel.warn, "node-t jmapd.service#warn")],
            )

        return ensureDeferred(run())

    def test_portInUse(self) -> None:
        """
        When the port is taken, starting exits with a one-line reason
        (C{SystemExit}, which twistd prints without a traceback) before any
        worker thread or the log filter starts.
        """

        async def run() -> None:
            first = await self.start_server()
            port = first.service.port.getHost().port
            top = self.make(f"jmap-port={port}")
            observers = list(globalLogPublisher._observers)
            error = self.assertRaises(SystemExit, top.startService)
            message = str(error.code)
            self.assertTrue(message.startswith(f"jmapd: cannot listen on 127.0.0.1 port {port} "), message)
            self.assertIn("jmap-port", message)
            self.assertNotIn("Traceback", message)
            self.assertFalse(top.jmap.env.workers.pool.started)
            self.assertEqual(top.jmap.env.workers.pool.threads, [])
            self.assertEqual(list(globalLogPublisher._observers), observers)
            self.assertIsNone(top.jmap.port)

        return ensureDeferred(run())

    def test_privilegedPortInUse(self) -> None:
        """
        twistd calls C{privilegedStartService} first: the exit happens
        there, before privileges are dropped and before C{startService}.
        """

        async def run() -> None:
            first = await self.start_server()
            port = first.service.port.getHost().port
            top = self.make(f"jmap-port={port}")
            error = self.assertRaises(SystemExit, top.privilegedStartService)
            self.assertIn(f"port {port}", str(error.code))
            self.assertFalse(top.running)

        return ensureDeferred(run())

    def test_schemaOrFileProblem(self) -> None:
        """
        A data directory that cannot be created exits with the reason, not
        a traceback, also when it became impossible after the configuration
        was checked (which refuses one that cannot be created).
        """
        blocker = os.path.join(self.directory, "file")
        path = self.write_config(f"db-path: {blocker}/data\n")
        options = self.parse("--config", path)
        with open(blocker, "w") as f:
            f.write("")
        error = self.assertRaises(SystemExit, tap.makeService, options)
        self.assertTrue(str(error.code).startswith("jmapd: "), error.code)

    def test_dataDirectoryProblem(self) -> None:
        """
        A db-path that cannot be created is a configuration error naming
        the key, reported before anything is built.
        """
        blocker = os.path.join(self.directory, "file")
        with open(blocker, "w") as f:
            f.write("")
        path = self.write_config(f"db-path: {blocker}/data\n")
        error = self.assertRaises(UsageError, self.parse, "--config", path)
        self.assertIn(f"db-path: expected a directory jmapd can create or write to, got '{blocker}/data'", str(error))

