"""
Tests for L{jmapd.workers.WorkerPoolService}: work runs in threads and its
results arrive on the reactor thread; stopping waits for work in flight.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import ensureDeferred
from twisted.internet.interfaces import IReactorCore
from twisted.internet.task import Clock
from twisted.python.threadable import isInIOThread
from twisted.trial.unittest import TestCase
from zope.interface import implementer

from jmapd.workers import PoolStopped, WorkerPoolService


class WorkerPoolTests(TestCase):
    """
    A pool on the real reactor, with real threads.
    """

    def start_pool(self, size: int = 2) -> WorkerPoolService:
        pool = WorkerPoolService(reactor, size)
        pool.startService()
        self.addCleanup(lambda: pool.stopService() if pool.running else None)
        return pool

    def test_result(self) -> None:
        """
        C{run} calls the function in a worker thread, with its arguments,
        and its L{Deferred} fires with the result on the reactor thread.
        """

        async def run() -> None:
            pool = self.start_pool()
            seen: list[Any] = []

            def work(a: int, b: int = 0) -> int:
                seen.append(isInIOThread())
                return a + b

            d = pool.run(work, 40, b=2)
            d.addCallback(lambda result: (result, isInIOThread()))
            self.assertEqual(await d, (42, True))
            self.assertEqual(seen, [False])

        return ensureDeferred(run())

    def test_failure(self) -> None:
        """
        An exception in the function fails the L{Deferred}, on the reactor
        thread.
        """

        async def run() -> None:
            pool = self.start_pool()

            def work() -> None:
                raise ZeroDivisionError("boom")

            d = pool.run(work)
            threads: list[bool] = []

            def failed(failure: Any) -> Any:
                threads.append(isInIOThread())
                return failure

            d.addErrback(failed)
            error = await self.assertFailure(d, ZeroDivisionError)
            self.assertEqual(str(error), "boom")
            self.assertEqual(threads, [True])

        return ensureDeferred(run())

    def test_stopWaitsForWork(self) -> None:
        """
        C{stopService} does not finish while a job runs; once the job ends,
        its result is delivered and then the threads are stopped.
        """

        async def run() -> None:
            pool = self.start_pool()
            entered = threading.Event()
            release = threading.Event()

            def work() -> str:
                entered.set()
                release.wait()
                return "done"

            job = pool.run(work)
            entered.wait()
            stopped = pool.stopService()
            self.assertNoResult(stopped)
            self.assertNoResult(job)
            self.assertFalse(pool.pool.joined)
            release.set()
            self.assertEqual(await job, "done")
            await stopped
            self.assertTrue(pool.pool.joined)
            self.assertFalse(pool.running)

        return ensureDeferred(run())

    def test_stopAfterCallerCallbacks(self) -> None:
        """
        Stopping finishes only after the callbacks the caller had added to
        a job in flight have run, and they get the job's failure, which
        waiting did not swallow.
        """

        async def run() -> None:
            pool = self.start_pool()
            release = threading.Event()
            order: list[str] = []

            def work() -> None:
                release.wait()
                raise KeyError("lost")

            def failed(failure: Any) -> None:
                failure.trap(KeyError)
                order.append("caller saw KeyError")

            job = pool.run(work)
            job.addErrback(failed)
            stopped = pool.stopService()
            stopped.addCallback(lambda _: order.append("stopped"))
            release.set()
            await stopped
            self.assertEqual(order, ["caller saw KeyError", "stopped"])

        return ensureDeferred(run())

    def test_runAfterStop(self) -> None:
        """
        Work submitted after stop fails at once with L{PoolStopped}, and the
        function is never called.
        """
        pool = self.start_pool()
        self.successResultOf(pool.stopService())
        calls: list[int] = []
        self.failureResultOf(pool.run(calls.append, 1), PoolStopped)
        self.assertEqual(calls, [])

    def test_runBeforeStart(self) -> None:
        """
        A pool that was never started refuses work the same way.
        """
        pool = WorkerPoolService(reactor, 1)
        self.failureResultOf(pool.run(lambda: None), PoolStopped)

    def test_restart(self) -> None:
        """
        A stopped service can be started again, with new threads.
        """

        async def run() -> None:
            pool = self.start_pool()
            await pool.stopService()
            pool.startService()
            self.assertEqual(await pool.run(lambda: "again"), "again")

        return ensureDeferred(run())


@implementer(IReactorCore)
class _TriggerRecorder:
    """
    Just enough of a reactor core for the pool: records system event
    triggers.
    """

    def __init__(self) -> None:
        self.triggers: dict[int, tuple[str, str, Callable[[], Any]]] = {}
        self.removed: list[int] = []

    def addSystemEventTrigger(self, phase: str, event: str, f: Callable[[], Any]) -> int:
        handle = len(self.triggers) + 1
        self.triggers[handle] = (phase, event, f)
        return handle

    def removeSystemEventTrigger(self, handle: int) -> None:
        self.removed.append(handle)
        del self.triggers[handle]


class ShutdownTriggerTests(TestCase):
    """
    The C{during shutdown} trigger that stops the threads when an embedder
    stops the reactor without stopping the service.
    """

    def test_registeredAndRemoved(self) -> None:
        """
        Starting on a reactor core registers a C{during shutdown} trigger;
        stopping the service removes it.
        """
        core = _TriggerRecorder()
        pool = WorkerPoolService(core, 1)
        pool.startService()
        [(handle, (phase, event, _f))] = core.triggers.items()
        self.assertEqual((phase, event), ("during", "shutdown"))
        self.successResultOf(pool.stopService())
        self.assertEqual(core.removed, [handle])
        self.assertEqual(core.triggers, {})
        self.assertTrue(pool.pool.joined)

    def test_triggerStopsThreads(self) -> None:
        """
        When the trigger fires, the threads stop and new work is refused; a
        later C{stopService} neither removes the spent trigger nor stops the
        pool twice.
        """
        core = _TriggerRecorder()
        pool = WorkerPoolService(core, 1)
        pool.startService()
        [(_phase, _event, trigger)] = core.triggers.values()
        trigger()
        self.assertTrue(pool.pool.joined)
        self.failureResultOf(pool.run(lambda: None), PoolStopped)
        self.successResultOf(pool.stopService())
        self.assertEqual(core.removed, [])

    def test_clockOnly(self) -> None:
        """
        On something that is not a reactor core (a L{Clock}) no trigger is
        registered and start and stop still work.
        """
        pool = WorkerPoolService(Clock(), 1)
        pool.startService()
        self.assertTrue(pool.pool.started)
        self.successResultOf(pool.stopService())
        self.assertTrue(pool.pool.joined)
