# -*- test-case-name: tests.test_logging -*-
"""
Apply C{log-level} to what twistd (or an embedding application) logs, and
name the node in every line when C{node-id} is set.

twisted.logger has no "trace" level: trace is debug plus one line per
JMAP method call, which the engine emits when the environment's C{trace}
flag is set.
"""

from __future__ import annotations

from typing import Any

from twisted.logger import (
    FilteringLogObserver,
    ILogObserver,
    LogLevel,
    LogLevelFilterPredicate,
    globalLogPublisher,
)
from zope.interface import implementer

LEVELS = {
    "error": LogLevel.error,
    "warn": LogLevel.warn,
    "info": LogLevel.info,
    "debug": LogLevel.debug,
    "trace": LogLevel.debug,
}


def level_predicate(log_level: str) -> LogLevelFilterPredicate:
    return LogLevelFilterPredicate(defaultLogLevel=LEVELS[log_level])


def filtered(observer: ILogObserver, log_level: str) -> FilteringLogObserver:
    """
    C{observer} seeing only events at C{log_level} or above.
    """
    return FilteringLogObserver(observer, [level_predicate(log_level)])


@implementer(ILogObserver)
class NodeLabel:
    """
    Pass events on with the node's name in front of their system (the
    C{[...]} of twistd's text lines, C{log_system} in JSON logs), and as
    C{jmapd_node}, so that the merged logs of several nodes say which
    node wrote each line.  Each observer gets its own copy of the event.
    """

    def __init__(self, observer: ILogObserver, node: str) -> None:
        self._observer = observer
        self._node = node

    def __call__(self, event: dict[str, Any]) -> None:
        labelled = dict(event)
        system = event.get("log_system")
        if system is None:
            level = event.get("log_level")
            system = f"{event.get('log_namespace', '-')}#{level.name if level is not None else '-'}"
        labelled["log_system"] = f"{self._node} {system}"
        labelled["jmapd_node"] = self._node
        self._observer(labelled)


class LevelFilter:
    """
    Filter the global log publisher's observers by level, for the lifetime
    of the service: the observers twistd installed are replaced by filtered
    wrappers (labelled with C{node}, when one is given) and restored when
    the service stops.
    """

    def __init__(self, log_level: str, publisher: Any = globalLogPublisher, node: str | None = None) -> None:
        self.log_level = log_level
        self._publisher = publisher
        self._node = node
        self._swapped: list[tuple[Any, Any]] = []

    def install(self) -> None:
        if self._swapped:
            return
        for observer in list(self._publisher._observers):
            target = observer if not self._node else NodeLabel(observer, self._node)
            wrapper = filtered(target, self.log_level)
            self._publisher.removeObserver(observer)
            self._publisher.addObserver(wrapper)
            self._swapped.append((observer, wrapper))

    def uninstall(self) -> None:
        for observer, wrapper in self._swapped:
            self._publisher.removeObserver(wrapper)
            self._publisher.addObserver(observer)
        self._swapped = []
