"""
The running server's shared parts, handed to every request handler and
method: configuration, registry, database, blob store, clock and caches.
"""

from __future__ import annotations

from typing import Any

from attrs import define, field


@define
class Environment:
    """
    What one jmapd service holds.

    @ivar clock: an L{IReactorTime} provider (the reactor, or a
        L{twisted.internet.task.Clock} in tests).
    @ivar trace: log-level is trace: log each method call.
    @ivar caches: the time-to-idle caches by name (ids, sharings, acl,
        recipients).
    """

    config: Any
    registry: Any
    database: Any
    blobs: Any
    clock: Any
    workers: Any = None
    trace: bool = False
    caches: dict[str, Any] = field(factory=dict)
    #: Called on the reactor thread after a commit with
    #: C{{accountId: {type: modseq}}}; the push issue subscribes here.
    state_listeners: list[Any] = field(factory=list)

    def publish_states(self, changed: dict[str, dict[str, int]]) -> None:
        for listener in list(self.state_listeners):
            listener(changed)
