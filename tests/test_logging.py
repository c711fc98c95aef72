"""
Tests for L{jmapd.logging} and the C{trace} log level: what each
C{log-level} lets through, and the per-method-call lines of C{trace}.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import ensureDeferred
from twisted.logger import Logger, LogLevel, LogPublisher, formatEvent, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from jmapd.logging import LevelFilter
from tests.support import ServerTestCase


class LevelFilterTests(SynchronousTestCase):
    """
    L{LevelFilter} on a private L{LogPublisher} with one recording
    observer.
    """

    def setUp(self) -> None:
        self.publisher = LogPublisher()
        self.events: list[dict[str, Any]] = []
        self.observer = self.events.append
        self.publisher.addObserver(self.observer)
        self.log = Logger(namespace="jmapd.test", observer=self.publisher)

    def levels_seen(self, log_level: str) -> list[LogLevel]:
        """
        Install a filter at C{log_level}, emit one event at each level, and
        return the levels of the events the observer got.
        """
        level_filter = LevelFilter(log_level, self.publisher)
        level_filter.install()
        self.addCleanup(level_filter.uninstall)
        for level in (LogLevel.debug, LogLevel.info, LogLevel.warn, LogLevel.error, LogLevel.critical):
            self.log.emit(level, "an event")
        return [event["log_level"] for event in self.events]

    def test_node_label(self) -> None:
        """
        With a node name, every line's system starts with it (twistd's
        text lines then say which node wrote them) and events carry it as
        jmapd_node; the events other observers get are unchanged.
        """
        from twisted.logger import formatEventAsClassicLogText

        untouched: list[dict[str, Any]] = []
        level_filter = LevelFilter("info", self.publisher, node="node-b")
        level_filter.install()
        self.addCleanup(level_filter.uninstall)
        self.publisher.addObserver(untouched.append)
        self.log.info("delivered {n}", n=3)
        [event] = self.events
        self.assertEqual(event["jmapd_node"], "node-b")
        self.assertIn("[node-b jmapd.test#info] delivered 3", formatEventAsClassicLogText(event))
        self.assertNotIn("jmapd_node", untouched[0])

    def test_warn(self) -> None:
        """
        At C{warn}, debug and info events are dropped; warn and more severe
        ones pass.
        """
        self.assertEqual(self.levels_seen("warn"), [LogLevel.warn, LogLevel.error, LogLevel.critical])

    def test_error(self) -> None:
        """
        At C{error}, only errors and critical events pass.
        """
        self.assertEqual(self.levels_seen("error"), [LogLevel.error, LogLevel.critical])

    def test_info(self) -> None:
        """
        At C{info} (the default), only debug is dropped.
        """
        self.assertEqual(
            self.levels_seen("info"), [LogLevel.info, LogLevel.warn, LogLevel.error, LogLevel.critical]
        )

    def test_debug(self) -> None:
        """
        C{debug} lets every event through.
        """
        self.assertEqual(
            self.levels_seen("debug"),
            [LogLevel.debug, LogLevel.info, LogLevel.warn, LogLevel.error, LogLevel.critical],
        )

    def test_trace(self) -> None:
        """
        C{trace}, which twisted.logger does not have, filters as C{debug}.
        """
        self.assertEqual(
            self.levels_seen("trace"),
            [LogLevel.debug, LogLevel.info, LogLevel.warn, LogLevel.error, LogLevel.critical],
        )

    def test_uninstall(self) -> None:
        """
        Uninstalling puts the original observer back, unwrapped, so it sees
        every level again.
        """
        level_filter = LevelFilter("error", self.publisher)
        level_filter.install()
        self.assertNotIn(self.observer, self.publisher._observers)
        level_filter.uninstall()
        self.assertEqual(self.publisher._observers, [self.observer])
        self.log.debug("visible again")
        self.assertEqual([event["log_level"] for event in self.events], [LogLevel.debug])

    def test_installTwice(self) -> None:
        """
        A second install does not wrap the wrappers: one uninstall restores
        the original observer.
        """
        level_filter = LevelFilter("warn", self.publisher)
        level_filter.install()
        level_filter.install()
        self.assertEqual(len(self.publisher._observers), 1)
        level_filter.uninstall()
        self.assertEqual(self.publisher._observers, [self.observer])


class TraceTests(ServerTestCase):
    """
    C{log-level: trace} logs one debug line per JMAP method call.
    """

    def capture(self) -> list[dict[str, Any]]:
        """
        Record the global log's events from the protocol engine until the
        test ends.  They are emitted in worker threads.
        """
        events: list[dict[str, Any]] = []

        def observer(event: dict[str, Any]) -> None:
            if event.get("log_namespace") == "jmapd.protocol.engine":
                events.append(event)

        globalLogPublisher.addObserver(observer)
        self.addCleanup(globalLogPublisher.removeObserver, observer)
        return events

    def test_tracePerMethodCall(self) -> None:
        """
        At C{trace} the environment's C{trace} flag is set and each method
        call of a request gives one debug line naming the method and its
        call id.
        """

        async def run() -> None:
            events = self.capture()
            server = await self.start_server(log_level="trace")
            self.assertTrue(server.env.trace)
            server.add_account("alice")
            await server.api([["Core/echo", {}, "first"], ["Core/echo", {"b": 1}, "second"]])
            lines = [formatEvent(event) for event in events]
            self.assertEqual(len(lines), 2, lines)
            self.assertTrue(lines[0].startswith("Core/echo first for alice"), lines)
            self.assertTrue(lines[1].startswith("Core/echo second for alice"), lines)
            self.assertEqual({event["log_level"] for event in events}, {LogLevel.debug})

        return ensureDeferred(run())

    def test_debugHasNoTrace(self) -> None:
        """
        At C{debug} the flag is off and method calls are not logged one by
        one.
        """

        async def run() -> None:
            events = self.capture()
            server = await self.start_server(log_level="debug")
            self.assertFalse(server.env.trace)
            server.add_account("alice")
            await server.api([["Core/echo", {}, "first"]])
            self.assertEqual([formatEvent(event) for event in events], [])

        return ensureDeferred(run())
