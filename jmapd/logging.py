# -*- test-case-name: tests.test_logging -*-
"""
Apply C{log-level} to what twistd (or an embedding application) logs.

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


class LevelFilter:
    """
    Filter the global log publisher's observers by level, for the lifetime
    of the service: the observers twistd installed are replaced by filtered
    wrappers and restored when the service stops.
    """

    def __init__(self, log_level: str, publisher: Any = globalLogPublisher) -> None:
        self.log_level = log_level
        self._publisher = publisher
        self._swapped: list[tuple[Any, Any]] = []

    def install(self) -> None:
        if self._swapped:
            return
        for observer in list(self._publisher._observers):
            wrapper = filtered(observer, self.log_level)
            self._publisher.removeObserver(observer)
            self._publisher.addObserver(wrapper)
            self._swapped.append((observer, wrapper))

    def uninstall(self) -> None:
        for observer, wrapper in self._swapped:
            self._publisher.removeObserver(wrapper)
            self._publisher.addObserver(observer)
        self._swapped = []
