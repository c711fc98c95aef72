# -*- test-case-name: tests.ingest.test_spool -*-
"""
Filing the delivery spool, in a process of its own.

With C{lmtp-spool: true} the server's process receives messages over LMTP
and makes them durable in the spool (L{jmapd.ingest.spool}); this module
files them in the mailboxes.  L{SpoolFiling} does it: each
L{SpoolFiling.file_next} reads the records after the last one filed (up to
C{MAX_BATCH}), prepares and files them in one transaction, the way
L{jmapd.ingest.delivery} files a group, and records in that transaction
how far the spool is filed and the copies it could not file (held for the
operator, L{jmapd.storage.spoolmark}).  It reports what the server's
process must do after the commit as a L{FiledGroup}: the states to push,
the address version its recipient cache learns, whether the submission
queue has a vacation reply to send.

L{FilerProcess} runs L{SpoolFiling} in a child process (C{python -m
jmapd.ingest.filer}), asking it for one group at a time over its standard
input and reading the answer, one JSON line, from its standard output.
Why a process: parsing and filing a message is interpreter work, which in
the server's process would take turns with the reactor thread under one
interpreter lock; in a process of its own it runs on the machine's other
core.  The child gets the server's configuration (pickled) and the spool's
path and id when it starts; it opens the database and the blob store as
C{jmapd-admin} does.  If it dies, the next group starts a new one: nothing
is lost, since what it did not commit is still in the spool after the
mark.
"""

from __future__ import annotations

import base64
import os
import pickle
import sys
import time
from collections import deque
from collections.abc import Mapping, Sequence
from typing import Any

import orjson
from attrs import asdict, evolve, field, frozen
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.error import ProcessDone
from twisted.internet.protocol import ProcessProtocol
from twisted.logger import Logger, eventFromJSON
from twisted.python.failure import Failure

import jmapd
from jmapd.ingest.delivery import MAX_BATCH, Deliverer, Envelope, Reply, _Message, _Prepared, trace_fields
from jmapd.ingest.spool import SpoolReader, SpoolRecord
from jmapd.storage import spoolmark
from jmapd.storage.accounts import auth_version
from jmapd.submission import queue

log = Logger()

#: A group whose transaction failed this many times in a row is filed
#: again one message at a time, and a message that fails this many times
#: alone is held (a message that makes the whole transaction fail would
#: otherwise stop every delivery behind it).  The database's own errors
#: (busy, unreachable, disk) do not count: they fail any message.
ATTEMPTS = 3


@frozen
class FiledGroup:
    """
    What one filing transaction of the spool did, for the server's process
    to act on once it has committed.

    @ivar filed: the sequence number of its last message (the spool may
        delete the records up to it).
    @ivar count: how many messages it filed (or held).
    @ivar held: how many of them have a copy it could not file.
    @ivar states: the changed states to push, C{{accountId: {type: modseq}}}.
    @ivar version: the address version the transaction read.
    @ivar wake: whether it queued a message for the relay (a vacation
        reply).
    """

    filed: int
    count: int
    held: int = 0
    states: Mapping[str, Mapping[str, int]] = field(factory=dict)
    version: int = 0
    wake: bool = False

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, value: Mapping[str, Any]) -> FiledGroup:
        return cls(
            filed=int(value["filed"]),
            count=int(value["count"]),
            held=int(value["held"]),
            states={account: dict(types) for account, types in value["states"].items()},
            version=int(value["version"]),
            wake=bool(value["wake"]),
        )


class _AfterCommit:
    """
    Stands in, for the filing transaction's after-commit callbacks, for
    what they would call in the server's process: the push fan-out, the
    recipient cache and the submission queue.  They are reported instead.
    """

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.states: dict[str, dict[str, int]] = {}
        self.version = 0
        self.wake = False

    def publish_states(self, changed: Mapping[str, Mapping[str, int]]) -> None:
        for account, types in changed.items():
            self.states.setdefault(account, {}).update(types)

    def observe_version(self, version: int) -> None:
        self.version = version

    def kick(self) -> None:
        self.wake = True


def _never(*args: Any) -> Deferred[Any]:
    return fail(RuntimeError("spool filing runs its groups itself"))


class SpoolFiling(Deliverer):
    """
    Files the spool C{spool_id}'s records, a group per L{file_next} call
    (blocking: in the filing process, or in a thread of the tests).

    @param env: the L{jmapd.environment.Environment} (its configuration,
        database, blob store and clock); filing uses a copy whose state
        listener records the states to push (L{_AfterCommit}).
    @param host: the host name of the Received fields.
    @param reader: reads the spool file.
    """

    def __init__(self, env: Any, host: str, spool_id: str, reader: SpoolReader, max_batch: int = MAX_BATCH) -> None:
        self._after = _AfterCommit()
        filing_env = evolve(env, workers=None, state_listeners=[self._after.publish_states])
        super().__init__(filing_env, self._after, host, max_batch, run_filing=_never)  # type: ignore[arg-type]
        self._spool_id = spool_id
        self._reader = reader
        self._mark: int | None = None
        self._held = 0
        # Failed attempts at the group after the mark, and, once a group
        # failed ATTEMPTS times, the last sequence number of that group:
        # up to it, messages are filed one at a time.
        self._failures = 0
        self._alone_until = 0
        # A vacation reply queued by a filing transaction wakes the queue
        # of the filing environment: that is recorded, and reported.
        queue.watch(self._env, self._after)

    def file_next(self) -> FiledGroup | None:
        """
        File the next group of the spool's records, in one transaction.

        @return: what it did, or C{None} when no record waits.
        @raise Exception: the transaction failed; nothing of it is filed,
            and the next call tries the same records again.
        """
        env = self._env
        if self._mark is None:
            self._mark = int(env.database.run_sync(spoolmark.filed, self._spool_id))
        alone = self._mark < self._alone_until
        records = self._reader.read(self._mark, 1 if alone else self._max_batch)
        if not records:
            return None
        now = float(env.clock.seconds())
        batch = [self._message(record) for record in records]
        self._prepare_all(batch)
        self._after.reset()
        try:
            _, callbacks = env.database.run_sync(self._file, batch, now, write=True)
        except Exception as error:
            if isinstance(error, (env.database.engine.OperationalError, OSError)):
                # The database is busy, unreachable or failing: that says
                # nothing about the messages, which wait for it.
                raise
            self._failures += 1
            if self._failures < ATTEMPTS:
                raise
            if not alone:
                log.warn(
                    "filing {count} spooled messages failed {attempts} times: filing them one at a time",
                    count=len(batch), attempts=self._failures,
                )
                self._failures = 0
                self._alone_until = batch[-1].seq
                raise
            callbacks = env.database.run_sync(self._hold_whole, batch[0], error, now, write=True)
        self._failures = 0
        for callback in callbacks:
            callback()
        self._mark = batch[-1].seq
        after = self._after
        return FiledGroup(self._mark, len(batch), self._held, after.states, after.version, after.wake)

    def _hold_whole(self, txn: Any, item: _Message, error: Exception, now: float) -> list[Any]:
        """
        Hold C{item} for all its recipients, in a transaction of its own:
        filing it alone failed L{ATTEMPTS} times.
        """
        self._held = 0
        spoolmark.set_filed(txn, self._spool_id, item.seq)
        reason = f"451 4.3.0 filing it failed {ATTEMPTS} times: {type(error).__name__}: {error}"
        self._hold(txn, item, item.envelope, reason, now)
        return []

    def _hold(self, txn: Any, item: _Message, envelope: Envelope, reason: str, now: float) -> None:
        log.critical(
            "message {queue_id} could not be filed for {addresses}: {reason}; it is held"
            " (jmapd-admin spool held)",
            queue_id=item.queue_id, reason=reason,
            addresses=", ".join(address for address, _ in envelope.recipients),
        )
        spoolmark.hold(
            txn,
            spoolmark.HeldMessage(
                self._spool_id, item.seq, item.queue_id, item.received, envelope.to_bytes().decode("utf-8"),
                item.message, reason, now,
            ),
        )
        self._held += 1

    def _message(self, record: SpoolRecord) -> _Message:
        envelope = Envelope.from_bytes(record.envelope)
        heads = [
            trace_fields(envelope, address, self._host, record.queue_id, record.received)
            for address, _ in envelope.recipients
        ]
        return _Message(
            envelope, heads, record.message, seq=record.seq, queue_id=record.queue_id, received=record.received
        )

    def _absorb(self, count: int) -> list[_Message]:
        # A group is what the spool held when it was read.
        return []

    def _account_of(self, txn: Any, prepared: _Prepared, owners: dict[str, str | None]) -> str | None:
        """
        The account RCPT found for the address (the 250 was given for it),
        if it still exists.
        """
        key = "\0" + prepared.account_id
        if key not in owners:
            exists = auth_version(txn, prepared.account_id) is not None
            owners[key] = prepared.account_id if exists else None
        return owners[key]

    def _before_commit(
        self, txn: Any, batch: Sequence[_Message], outcomes: Sequence[Sequence[Reply]], now: float
    ) -> None:
        """
        Record how far the spool is filed, and hold every message with a
        copy that was not filed (its 250 was given: it is kept for the
        operator, never dropped), with the recipients it was not filed
        for.
        """
        spoolmark.set_filed(txn, self._spool_id, batch[-1].seq)
        # Counted afresh by each run of the transaction (the database may
        # run it again).
        self._held = 0
        for item, replies in zip(batch, outcomes, strict=True):
            failed = [
                (recipient, reply)
                for recipient, reply in zip(item.envelope.recipients, replies, strict=True)
                if reply.code != 250
            ]
            if not failed:
                continue
            envelope = evolve(item.envelope, recipients=tuple(recipient for recipient, _ in failed))
            reason = "; ".join(f"{reply.code} {reply.text}" for _, reply in failed)
            self._hold(txn, item, envelope, reason, now)


#: Seconds a group may take before the filing process is taken to hang.
FILING_TIMEOUT = 600.0


class FilerGone(Exception):
    """
    The filing process ended before it answered.
    """


class FilerProcess(ProcessProtocol):
    """
    The server's side of the filing process: L{file_next} asks it for one
    group, and fires with its L{FiledGroup} (or C{None}); a process that
    died is started again by the next call.

    @param spool_path: the spool file.
    @param host: the host name of the Received fields.
    """

    def __init__(self, reactor: Any, config: Any, spool_path: str, host: str) -> None:
        self._reactor = reactor
        self._config = config
        self._spool_path = spool_path
        self._host = host
        self.spool_id = ""
        self._process: Any = None
        self._answers: deque[Deferred[FiledGroup | None]] = deque()
        self._out = b""
        self._err = b""
        self._ended: list[Deferred[None]] = []

    def start(self, spool_id: str) -> Deferred[None]:
        """
        Start the process, for the spool C{spool_id}.

        @return: a L{Deferred} firing once it has opened the database and
            answers (or has ended: it is started again for the first
            group); it never fails.
        """
        self.spool_id = spool_id
        if self._process is None:
            self._start()
        d: Deferred[FiledGroup | None] = Deferred()
        self._answers.append(d)
        self._process.write(b"P\n")
        return d.addErrback(lambda _: None).addCallback(lambda _: None)

    def file_next(self) -> Deferred[FiledGroup | None]:
        """
        Ask the process to file the next group.  If it has not answered
        in L{FILING_TIMEOUT} seconds it is killed (the L{Deferred} fails
        with L{FilerGone}, and the next call starts a new one).
        """
        if self._process is None:
            self._start()
        d: Deferred[FiledGroup | None] = Deferred()
        self._answers.append(d)
        self._process.write(b"F\n")
        process = self._process

        def hung() -> None:
            if self._process is process:
                log.error(
                    "the spool filing process {pid} did not file a group in {timeout} s: killed",
                    pid=process.pid, timeout=FILING_TIMEOUT,
                )
                process.signalProcess("KILL")

        watchdog = self._reactor.callLater(FILING_TIMEOUT, hung)

        def answered(result: Any) -> Any:
            if watchdog.active():
                watchdog.cancel()
            return result

        return d.addBoth(answered)

    def _start(self) -> None:
        environ = dict(os.environ)
        # The child imports the same jmapd as this process.
        top = os.path.dirname(os.path.dirname(os.path.abspath(jmapd.__file__)))
        environ["PYTHONPATH"] = os.pathsep.join(filter(None, [top, environ.get("PYTHONPATH")]))
        self._out = self._err = b""
        self._process = self._reactor.spawnProcess(
            self, sys.executable, [sys.executable, "-m", "jmapd.ingest.filer"], env=environ
        )
        init = pickle.dumps((self._config, self._spool_path, self.spool_id, self._host))
        self._process.write(base64.b64encode(init) + b"\n")
        log.info("spool filing process {pid} started", pid=self._process.pid)

    def outReceived(self, data: bytes) -> None:
        self._out += data
        while b"\n" in self._out:
            line, self._out = self._out.split(b"\n", 1)
            if not self._answers:
                log.error("the spool filing process said {line!r} unasked", line=line)
                continue
            d = self._answers.popleft()
            try:
                answer = orjson.loads(line)
            except orjson.JSONDecodeError:
                d.errback(Failure(FilerGone(f"the spool filing process said {line[:200]!r}")))
                continue
            if "error" in answer:
                d.errback(Failure(RuntimeError(f"spool filing: {answer['error']}")))
            elif "ready" in answer:
                d.callback(None)
            else:
                group = answer["group"]
                d.callback(None if group is None else FiledGroup.from_json(group))

    def errReceived(self, data: bytes) -> None:
        """
        The process's log events (one JSON object a line), logged here as
        they were there, with their level; anything else it wrote (a
        crash's traceback) as warnings.
        """
        self._err += data
        while b"\n" in self._err:
            line, self._err = self._err.split(b"\n", 1)
            text = line.decode("utf-8", "replace").strip()
            if not text:
                continue
            try:
                event = eventFromJSON(text)
            except ValueError:
                event = None
            if not isinstance(event, dict):
                log.warn("spool filing process: {line}", line=text)
            else:
                event["filer_pid"] = self._process.pid if self._process is not None else None
                log.observer(event)

    def processEnded(self, reason: Failure) -> None:
        self._process = None
        if not reason.check(ProcessDone):
            log.warn("the spool filing process ended: {reason}", reason=reason.getErrorMessage())
        answers, self._answers = self._answers, deque()
        for d in answers:
            d.errback(Failure(FilerGone("the spool filing process ended")))
        ended, self._ended = self._ended, []
        for waiting in ended:
            waiting.callback(None)

    def stop(self, timeout: float = 30.0) -> Deferred[None]:
        """
        Close the process's input (it finishes the group it files and
        exits) and fire once it has ended; after C{timeout} seconds it is
        killed.
        """
        if self._process is None:
            return succeed(None)
        d: Deferred[None] = Deferred()
        self._ended.append(d)
        self._process.closeStdin()
        process = self._process

        def kill() -> None:
            if self._process is process:
                log.warn("the spool filing process did not stop in {timeout} s: killed", timeout=timeout)
                process.signalProcess("KILL")

        call = self._reactor.callLater(timeout, kill)
        d.addBoth(lambda result: call.cancel() if call.active() else None)
        return d


class _Clock:
    def seconds(self) -> float:
        return time.time()


def main() -> None:
    """
    The filing process: read the server's configuration, the spool's path
    and id and the host name from the first line, then answer each C{F}
    line with one JSON line, C{{"group": ...}} or C{{"error": ...}}, and
    each C{P} with C{{"ready": true}}, until the input ends.
    """
    from twisted.logger import globalLogBeginner, jsonFileLogObserver

    from jmapd.blobs.database import open_blob_store
    from jmapd.environment import Environment
    from jmapd.storage import open_database

    # The answers go to the real standard output; anything else printed
    # goes to standard error, which the server logs, as it does the log
    # events written there.
    answers = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    globalLogBeginner.beginLoggingTo([jsonFileLogObserver(sys.stderr, recordSeparator="")], redirectStandardIO=False)
    config, spool_path, spool_id, host = pickle.loads(base64.b64decode(sys.stdin.buffer.readline()))
    database = open_database(config)
    env = Environment(
        config=config, registry=None, database=database, blobs=open_blob_store(config, database), clock=_Clock()
    )
    filing = SpoolFiling(env, host, spool_id, SpoolReader(spool_path))
    for line in sys.stdin.buffer:
        command = line.strip()
        if command == b"P":
            answers.write(b'{"ready":true}\n')
            answers.flush()
            continue
        if command != b"F":
            continue
        try:
            group = filing.file_next()
        except Exception as error:
            log.failure("filing a group of the delivery spool failed")
            answer: dict[str, Any] = {"error": f"{type(error).__name__}: {error}"}
        else:
            answer = {"group": None if group is None else group.to_json()}
        answers.write(orjson.dumps(answer) + b"\n")
        answers.flush()


if __name__ == "__main__":
    main()
