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

from collections.abc import Callable
from typing import Any, TypeVar

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


def when_finished(job: Deferred[Any]) -> Deferred[None]:
    """
    A L{Deferred} that fires when C{job}'s callback chain, as it is now,
    has run.  The job's result passes through untouched: a failure is
    neither swallowed nor turned into an unhandled error by waiting.
    """
    finished: Deferred[None] = Deferred()

    def passthrough(result: Any) -> Any:
        finished.callback(None)
        return result

    job.addBoth(passthrough)
    return finished


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
        self._name = name
        self.pool = ThreadPool(minthreads=size, maxthreads=size, name=name)
        self._inflight: set[Deferred[Any]] = set()
        self._accepting = False
        self._shutdownTrigger: Any = None

    def startService(self) -> None:
        super().startService()
        if self.pool.joined:
            # A stopped ThreadPool cannot start again; a restarted service
            # gets a new one.
            self.pool = ThreadPool(minthreads=self.size, maxthreads=self.size, name=self._name)
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

        A job counts as finished once the callbacks its caller added before
        the stop have run, so a request handler gets its result before the
        database behind the pool is closed.
        """
        super().stopService()
        self._accepting = False
        if self._shutdownTrigger is not None:
            self._reactor.removeSystemEventTrigger(self._shutdownTrigger)
            self._shutdownTrigger = None
        pending = [when_finished(d) for d in self._inflight]
        if not pending:
            self._stopPool()
            return succeed(None)
        log.info("waiting for {count} worker jobs before stopping", count=len(pending))
        waiting = DeferredList(pending)
        waiting.addCallback(lambda _: self._stopPool())
        return waiting  # type: ignore[return-value]

    def _stopPool(self) -> None:
        """
        Stop (join) the threads, once: the shutdown trigger and
        L{stopService} may both get here, and a second
        L{ThreadPool.stop} raises.
        """
        if not self.pool.joined:
            self.pool.stop()

    def _finalStop(self) -> None:
        """
        The reactor is shutting down and the service was not stopped: stop
        the threads anyway (this waits for the jobs they are running), or
        the process could not exit.
        """
        self._shutdownTrigger = None
        self._accepting = False
        self._stopPool()

