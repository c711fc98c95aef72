# -*- test-case-name: tests.storage.test_database -*-
"""
Run database work in the worker pool, one transaction at a time.

L{Database.run_interaction} is the only way JMAP code touches the database:
it runs C{fn(txn, *args)} in a worker thread inside one transaction that
commits when C{fn} returns and rolls back when it raises.  Callbacks
registered with L{Transaction.after_commit} run on the reactor thread once
the commit is durable: that is where push notifications and cache
invalidation belong.

Code that reads something of an account in order to change it (a count,
a set of keywords) calls L{Transaction.lock_account} first: on SQLite the
write transaction is already the only writer, but on PostgreSQL several
nodes write at once, and the lock makes them take turns per account.
A transaction that failed only because of a concurrent one (a deadlock,
a serialisation failure) is run again from the start, so C{fn} must not
have effects outside the transaction before it returns (after-commit
callbacks are the place for those).
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterable, Sequence
from typing import Any, TypeVar

from twisted.internet.defer import Deferred
from twisted.logger import Logger

from jmapd.storage.freshness import ChangeCounter, change_counter
from jmapd.storage.migrations import apply_migrations
from jmapd.storage.pending import PendingChanges, Snapshot

T = TypeVar("T")

log = Logger()

#: How many times a transaction that lost a deadlock or a serialisation
#: conflict is run in all before the error reaches the caller.
TRANSIENT_ATTEMPTS = 5


class Transaction:
    """
    One transaction on one connection: a thin cursor wrapper that knows its
    engine (for the dialect), collects after-commit callbacks and holds the
    changelog writes until they are needed (L{pending}).
    """

    def __init__(self, engine: Any, conn: Any) -> None:
        self.engine = engine
        self.conn = conn
        self._cursor = conn.cursor()
        self.after_commit_callbacks: list[Callable[[], Any]] = []
        self._savepoints = 0
        self._locked_accounts: set[str] = set()
        #: The modseqs, changelog rows and states not written yet
        #: (L{jmapd.storage.pending}); L{flush} writes them.
        self.pending = PendingChanges()

    def flush(self) -> None:
        """
        Write the held changelog writes (before a commit, and before
        reading the changelog, the states or an account's modseq).
        """
        if not self.pending.empty:
            self.pending.write(self)

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Any:
        self._cursor.execute(self.engine.convert_sql(sql), params)
        return self._cursor

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        self._cursor.executemany(self.engine.convert_sql(sql), rows)

    def fetchone(self, sql: str, params: Sequence[Any] = ()) -> Any:
        return self.execute(sql, params).fetchone()

    def fetchall(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        return self.execute(sql, params).fetchall()

    def fetchvalue(self, sql: str, params: Sequence[Any] = (), default: Any = None) -> Any:
        row = self.fetchone(sql, params)
        return default if row is None else row[0]

    @property
    def rowcount(self) -> int:
        return int(self._cursor.rowcount)

    def lock_account(self, account_id: str) -> None:
        """
        Make this transaction the only writer of the account until it ends.
        Call it before reading what is about to be changed (counts,
        memberships, the changelog), so that the reads see every write
        committed before.  Cheap to call again: the lock is taken once.
        """
        if account_id not in self._locked_accounts:
            self.engine.lock_account(self, account_id)
            self._locked_accounts.add(account_id)

    def after_commit(self, callback: Callable[[], Any]) -> None:
        """
        Call C{callback()} on the reactor thread after this transaction has
        committed; never if it rolls back.
        """
        self.after_commit_callbacks.append(callback)

    def savepoint(self) -> _Savepoint:
        """
        A nested unit: C{with txn.savepoint(): ...} undoes what the block
        did when it raises, leaving the rest of the transaction intact.  Each
        JMAP method call, and each object of a /set, runs in one, so no
        write is ever half-applied.
        """
        self._savepoints += 1
        return _Savepoint(self, f"sp{self._savepoints}")


class _Savepoint:
    """
    Rolling back puts back, with the rows, what the transaction held at
    the start: its changelog writes not written yet (whether or not they
    were written meanwhile) and the account locks (PostgreSQL releases a
    lock taken inside a savepoint that is rolled back).
    """

    def __init__(self, txn: Transaction, name: str) -> None:
        self._txn = txn
        self._name = name
        self._pending: Snapshot | None = None
        self._locked: set[str] = set()

    def __enter__(self) -> None:
        txn = self._txn
        self._pending = txn.pending.snapshot()
        self._locked = set(txn._locked_accounts)
        txn.execute(f"SAVEPOINT {self._name}")

    def __exit__(self, kind: Any, value: Any, tb: Any) -> None:
        txn = self._txn
        if kind is None:
            txn.execute(f"RELEASE SAVEPOINT {self._name}")
        else:
            txn.execute(f"ROLLBACK TO SAVEPOINT {self._name}")
            txn.execute(f"RELEASE SAVEPOINT {self._name}")
            assert self._pending is not None, "a savepoint left without being entered"
            txn.pending.restore(self._pending)
            txn._locked_accounts = self._locked


class Database:
    """
    A database reached through an engine, used from the threads of a
    worker pool (or, for the admin command and tests, synchronously).

    @param engine: an engine such as L{jmapd.storage.engines.sqlite.SQLiteEngine}.
    @param run_in_thread: C{run(fn, *args) -> Deferred}, normally
        L{jmapd.workers.WorkerPoolService.run}.
    """

    def __init__(self, engine: Any, run_in_thread: Callable[..., Deferred[Any]] | None = None) -> None:
        self.engine = engine
        self._run_in_thread = run_in_thread
        self._local = threading.local()
        self._connections: list[Any] = []
        self._lock = threading.Lock()
        pool_size = getattr(engine, "pool_size", None)
        # An engine with a pool size shares that many connections between
        # the threads (a thread waits for a free one); otherwise each thread
        # keeps its own.
        self._idle: queue.LifoQueue[Any] | None = None
        self._slots: threading.BoundedSemaphore | None = None
        if pool_size is not None:
            self._idle = queue.LifoQueue()
            self._slots = threading.BoundedSemaphore(pool_size)
        self._change_counter: ChangeCounter | None = None

    def change_counter(self) -> ChangeCounter | None:
        """
        The database's L{ChangeCounter} (for the reactor thread), or
        C{None} when the engine has none; closed with the database.
        """
        if self._change_counter is None:
            self._change_counter = change_counter(self.engine)
        return self._change_counter

    def _connection(self) -> Any:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self.engine.connect()
            self._local.conn = conn
            with self._lock:
                self._connections.append(conn)
        return conn

    def _acquire(self) -> Any:
        if self._slots is None:
            return self._connection()
        assert self._idle is not None
        self._slots.acquire()
        try:
            try:
                return self._idle.get_nowait()
            except queue.Empty:
                conn = self.engine.connect()
                with self._lock:
                    self._connections.append(conn)
                return conn
        except BaseException:
            self._slots.release()
            raise

    def _release(self, conn: Any) -> None:
        broken = self.engine.is_broken(conn)
        if broken:
            # The server went away: the next transaction gets a new one.
            with self._lock:
                if conn in self._connections:
                    self._connections.remove(conn)
            if self._slots is None:
                self._local.conn = None
        if self._slots is None:
            return
        assert self._idle is not None
        if not broken:
            self._idle.put(conn)
        self._slots.release()

    def migrate(self) -> int:
        """
        Bring the schema to the current version (synchronously, at
        start-up, before anything is served).

        @return: the schema version.
        """
        conn = self._acquire()
        try:
            return apply_migrations(self.engine, conn)
        finally:
            self._release(conn)

    def run_sync(self, fn: Callable[..., T], *args: Any, write: bool = False) -> T:
        """
        Run C{fn(txn, *args)} in one transaction in the calling thread and
        return its result; after-commit callbacks are returned unrun to
        L{run_interaction} or, here, run at once.
        """
        result, callbacks = self._transaction(fn, args, write)
        for callback in callbacks:
            callback()
        return result

    def _transaction(
        self, fn: Callable[..., T], args: Sequence[Any], write: bool
    ) -> tuple[T, list[Callable[[], Any]]]:
        conn = self._acquire()
        try:
            attempt = 1
            while True:
                txn = Transaction(self.engine, conn)
                self.engine.begin(conn, write)
                outer = getattr(self._local, "txn", None)
                self._local.txn = txn
                try:
                    result = fn(txn, *args)
                    txn.flush()
                    self.engine.commit(conn)
                except BaseException as error:
                    if not self.engine.is_broken(conn):
                        self.engine.rollback(conn)
                    if attempt < TRANSIENT_ATTEMPTS and self.engine.is_transient(error):
                        log.info(
                            "transaction {attempt} lost to a concurrent one ({error}); running it again",
                            attempt=attempt,
                            error=type(error).__name__,
                        )
                        attempt += 1
                        continue
                    raise
                finally:
                    self._local.txn = outer
                return result, txn.after_commit_callbacks
        finally:
            self._release(conn)

    def current_transaction(self) -> Transaction | None:
        """
        The transaction the calling thread is running (inside
        L{run_sync} or L{run_interaction}), or C{None}: for code called
        from within one, such as a blob store that keeps its bytes in this
        database and must write them in the caller's transaction.
        """
        return getattr(self._local, "txn", None)

    def run_interaction(self, fn: Callable[..., T], *args: Any, write: bool = False) -> Deferred[T]:
        """
        Run C{fn(txn, *args)} in a worker thread inside one transaction.

        @param write: start a write transaction (it takes the write lock at
            once, so it cannot fail later because another writer won).
        @return: a L{Deferred} firing on the reactor thread with C{fn}'s
            result after the commit and after the after-commit callbacks ran.
        """
        assert self._run_in_thread is not None, "this Database has no worker pool"
        d = self._run_in_thread(self._transaction, fn, args, write)

        def committed(outcome: tuple[T, list[Callable[[], Any]]]) -> T:
            result, callbacks = outcome
            for callback in callbacks:
                try:
                    callback()
                except Exception:
                    log.failure("after-commit callback failed")
            return result

        return d.addCallback(committed)

    def run_in_thread(self, fn: Callable[..., T], *args: Any) -> Deferred[T]:
        """
        Run C{fn(*args)} in a worker thread with no transaction (for CPU
        work such as password hashing that must not hold one open).
        """
        assert self._run_in_thread is not None, "this Database has no worker pool"
        return self._run_in_thread(fn, *args)

    def close(self) -> None:
        """
        Close every connection the threads opened (call once they stopped).
        """
        if self._change_counter is not None:
            self._change_counter.close()
        with self._lock:
            connections, self._connections = self._connections, []
        for conn in connections:
            try:
                conn.close()
            except Exception:
                pass
        self._local = threading.local()
        if self._idle is not None:
            self._idle = queue.LifoQueue()
