# -*- test-case-name: tests.test_workers -*-
"""
The worker thread pool: every blocking operation (database, blob files,
MIME parsing) runs here, never on the reactor thread.

L{WorkerPoolService} starts the pool with the service and, on stop, waits for
the work already in flight before stopping the threads, so an acknowledged
write is never cut off by a shutdown.  A ``during shutdown`` trigger stops
the pool as a backstop for embedders that stop the reactor without stopping
the service first (the same arrangement as L{twisted.enterprise.adbapi}).
"""

from __future__ import annotations

from typing import Any, Callable, TypeVar

from twisted.application.service import Service
from twisted.internet.defer import Deferred, DeferredList, fail, succeed
from twisted.internet.interfaces import IReactorCore
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.threadpool import ThreadPool

T = TypeVar("T")

log = Logger()


class PoolStopped(Exception):
    """
    Work was submitted to a pool that is not running.
    """


class WorkerPoolService(Service):
    """
    A L{ThreadPool} sized by ``worker-pool-size`` whose lifetime is that of
    the service.

    @ivar pool: the thread pool.
    """

    name = "workers"

    def __init__(self, reactor: Any, size: int, name: str = "jmapd-worker") -> None:
        self._reactor = reactor
        self.size = size
        self.pool = ThreadPool(minthreads=size, maxthreads=size, name=name)
        self._inflight: set[Deferred[Any]] = set()
        self._accepting = False
        self._shutdownTrigger: Any = None

    def startService(self) -> None:
        super().startService()
        self.pool.start()
        self._accepting = True
        if IReactorCore.providedBy(self._reactor):
            self._shutdownTrigger = self._reactor.addSystemEventTrigger(
                "during", "shutdown", self._finalStop
            )

    def run(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> Deferred[T]:
        """
        Call C{fn(*args, **kwargs)} in a worker thread.

        @return: a L{Deferred} that fires on the reactor thread with the
            result or the failure of the call.
        """
        if not self._accepting:
            return fail(PoolStopped("the worker pool is not running"))
        d: Deferred[T] = deferToThreadPool(self._reactor, self.pool, fn, *args, **kwargs)
        self._inflight.add(d)

        def done(result: Any) -> Any:
            self._inflight.discard(d)
            return result

        d.addBoth(done)
        return d

    def stopService(self) -> Deferred[None]:
        """
        Refuse new work, wait for what is in flight, then stop the threads.
        """
        super().stopService()
        self._accepting = False
        if self._shutdownTrigger is not None:
            self._reactor.removeSystemEventTrigger(self._shutdownTrigger)
            self._shutdownTrigger = None
        pending = list(self._inflight)
        if not pending:
            self.pool.stop()
            return succeed(None)
        log.info("waiting for {count} worker jobs before stopping", count=len(pending))
        waiting = DeferredList(pending, consumeErrors=True)
        waiting.addCallback(lambda _: self.pool.stop())
        return waiting  # type: ignore[return-value]

    def _finalStop(self) -> None:
        self._shutdownTrigger = None
        self._accepting = False
        self.pool.stop()

