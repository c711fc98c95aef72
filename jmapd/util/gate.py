# -*- test-case-name: tests.util.test_gate -*-
"""
A gate: callers wait until it opens, once, and then pass at once.
"""

from __future__ import annotations

from twisted.internet.defer import Deferred, succeed


class Gate:
    """
    Closed until L{open}; L{wait} fires then (or at once, once open).
    """

    def __init__(self) -> None:
        self.is_open = False
        self._waiting: list[Deferred[None]] = []

    def wait(self) -> Deferred[None]:
        if self.is_open:
            return succeed(None)
        d: Deferred[None] = Deferred()
        self._waiting.append(d)
        return d

    def open(self) -> None:
        self.is_open = True
        waiting, self._waiting = self._waiting, []
        for d in waiting:
            d.callback(None)
