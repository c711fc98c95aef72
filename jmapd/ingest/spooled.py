# -*- test-case-name: tests.ingest.test_spool -*-
"""
Delivery with C{lmtp-spool: true}: acknowledge once spooled, file behind.

L{SpooledDeliverer} is what LMTP hands messages to in that mode (it answers
L{jmapd.ingest.delivery.Deliverer}'s C{deliver}).  A message is appended to
the spool (L{jmapd.ingest.spool}); once the spool's transaction holding it
has committed, every recipient gets 250.  Filing runs behind, one group at a
time, by whatever C{file_next} runs (the filing process,
L{jmapd.ingest.filer.FilerProcess}, in the server): each group is every
record the spool holds after the last one filed, up to 200, so groups grow
with the rate.  What a group's transaction reports is done here, on the
reactor thread, once it has committed: its states are pushed, the recipient
cache learns the address version, the submission queue is woken for a
vacation reply, and the spool deletes the records.

The spool never runs far ahead of the mailboxes: while C{backlog} messages
are acknowledged and not filed, the next 250s wait.  A group whose
transaction fails is tried again L{RETRY_DELAY} seconds later, with what
arrived meanwhile; its messages stay in the spool (their 250s were given).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred, maybeDeferred, succeed
from twisted.logger import Logger
from twisted.python.failure import Failure

from jmapd.ingest.delivery import MAX_BATCH, Envelope, Reply, make_queue_id, temporary_failure
from jmapd.ingest.filer import FiledGroup
from jmapd.ingest.spool import Spool
from jmapd.submission import queue

log = Logger()

#: Seconds before a filing transaction that failed as a whole is tried
#: again (its messages wait in the spool meanwhile).
RETRY_DELAY = 5.0


class SpooledDeliverer:
    """
    @param env: the L{jmapd.environment.Environment}.
    @param resolver: the L{jmapd.ingest.recipients.RecipientResolver} RCPT
        used; it learns the address version from every group.
    @param spool: the spool, opened by the caller (see L{recovered}).
    @param file_next: C{file_next() -> Deferred} filing the next group and
        firing with its L{FiledGroup} (C{None}: nothing was left).
    @param backlog: the most messages acknowledged and not yet filed.
    """

    def __init__(
        self,
        env: Any,
        resolver: Any,
        spool: Spool,
        file_next: Callable[[], Deferred[FiledGroup | None]],
        backlog: int = MAX_BATCH,
    ) -> None:
        self._env = env
        self._resolver = resolver
        self._spool = spool
        self._file_next = file_next
        self._backlog = backlog
        self._count = 0
        # Acknowledged and not filed, and the 250s waiting for that number
        # to come down.
        self._unfiled = 0
        self._room: deque[Deferred[None]] = deque()
        self._filing = False
        # Nothing is filed before the spool has been read (recovered), nor
        # while a failed group waits for its retry, nor once stopping.
        self._recovering = True
        self._retry: Any = None
        self._stopping = False
        self._idle: list[Deferred[None]] = []
        #: Transactions committed and messages filed, for logs and benchmarks.
        self.batches = 0
        self.messages = 0
        #: Messages held (a copy not filed) since the start.
        self.held = 0

    @property
    def busy(self) -> bool:
        return self._filing or (self._unfiled > 0 and not self._stopping)

    def deliver(self, envelope: Envelope, message: bytes) -> Deferred[list[Reply]]:
        """
        Spool C{message} for each recipient of C{envelope}.

        @return: a L{Deferred} firing with one L{Reply} per recipient, in
            envelope order: 250 once the message is in the spool and the
            backlog has room, 451 if it could not be spooled.  It never
            fails.
        """
        now = float(self._env.clock.seconds())
        self._count += 1
        queue_id = make_queue_id(now, self._count)
        d = self._spool.append(queue_id, now, envelope.to_bytes(), message)

        def spooled(seq: int) -> Deferred[None]:
            self._unfiled += 1
            self._kick()
            if self._unfiled <= self._backlog or self._stopping:
                return succeed(None)
            room: Deferred[None] = Deferred()
            self._room.append(room)
            return room

        def accepted(_: Any) -> list[Reply]:
            return [Reply(250, f"2.0.0 <{address}> queued as {queue_id}") for address, _ in envelope.recipients]

        def not_spooled(failure: Failure) -> list[Reply]:
            # The spool logged why.
            return [temporary_failure() for _ in envelope.recipients]

        return d.addCallback(spooled).addCallbacks(accepted, not_spooled)

    def recovered(self, count: int) -> None:
        """
        The spool is open and held C{count} messages that were acknowledged
        and not filed (the server stopped or crashed first): file them, and
        from now on what arrives.
        """
        if count:
            log.info("filing {count} messages received before the restart", count=count)
        self._unfiled += count
        self._recovering = False
        self._kick()

    def stop(self) -> Deferred[None]:
        """
        File no more (what waits stays in the spool for the next start),
        send the 250s that waited for filing to catch up (those messages
        are in the spool), and fire once the group being filed is done.
        """
        self._stopping = True
        if self._retry is not None and self._retry.active():
            self._retry.cancel()
        while self._room:
            self._room.popleft().callback(None)
        return self.idle()

    def idle(self) -> Deferred[None]:
        """
        A L{Deferred} firing when every acknowledged message is filed (or,
        once stopping, when no group is being filed).
        """
        if not self.busy:
            return succeed(None)
        d: Deferred[None] = Deferred()
        self._idle.append(d)
        return d

    def _kick(self) -> None:
        if self._filing or self._unfiled <= 0 or self._recovering or self._stopping:
            return
        if self._retry is not None and self._retry.active():
            return
        self._filing = True
        d = maybeDeferred(self._file_next)
        d.addCallbacks(self._filed, self._failed, callbackArgs=(self._unfiled,))
        d.addBoth(self._next_group)

    def _filed(self, group: FiledGroup | None, asked: int) -> None:
        """
        C{group} is filed; C{asked} messages were counted as not filed
        when it was asked for.
        """
        if group is None:
            # Nothing was left of those: the count was off (a group took
            # in records before the spool's answer for them came here).
            # Those acknowledged since are counted still.
            self._unfiled = max(self._unfiled - asked, 0)
        else:
            self._spool.release(group.filed)
            self._unfiled = max(self._unfiled - group.count, 0)
            self.batches += 1
            self.messages += group.count
            self.held += group.held
        while self._room and self._unfiled <= self._backlog:
            self._room.popleft().callback(None)
        if group is not None:
            try:
                if group.states:
                    self._env.publish_states({account: dict(types) for account, types in group.states.items()})
                self._resolver.observe_version(group.version)
                if group.wake:
                    queue.wake(self._env)
            except Exception:
                log.failure("after filing {count} spooled messages", count=group.count)

    def _failed(self, failure: Failure) -> None:
        log.failure(
            "filing {count} messages of the delivery spool failed; they stay in the spool and are"
            " filed again in {delay} s", failure, count=self._unfiled, delay=RETRY_DELAY,
        )
        self._retry = self._env.clock.callLater(RETRY_DELAY, self._kick)

    def _next_group(self, _: Any) -> None:
        self._filing = False
        self._kick()
        if not self.busy:
            idle, self._idle = self._idle, []
            for d in idle:
                d.callback(None)
