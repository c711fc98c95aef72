# -*- test-case-name: tests.submission.test_queue -*-
"""
The outgoing queue service: send what is due, keep what must be retried.

Messages wait in the database (L{jmapd.storage.submissions}), so the queue
survives a restart.  L{QueueService} wakes up when a transaction that
queued a message commits (L{enqueue_message} arranges that), when the
earliest waiting message becomes due (a hold, a delayed send, a retry),
and every L{POLL_INTERVAL} seconds in case another process queued one.
For each due message it claims the row, hands the message to the relay,
and records the outcome in one transaction: recipients the relay accepted
or refused for good are done, the others are retried with exponential
backoff, and the EmailSubmission, if there is one, gets their
deliveryStatus and, once nothing can be recalled, undoStatus final.

Time comes from an injected clock, so tests drive holds and backoff with
L{twisted.internet.task.Clock}; the network goes through the reactor.
"""

from __future__ import annotations

from typing import Any

from twisted.application.service import Service
from twisted.internet.defer import CancelledError, Deferred, DeferredList, succeed
from twisted.logger import Logger

from jmapd.storage import submissions as storage
from jmapd.submission.relay import Relay, Reply, temporary
from jmapd.workers import when_finished

log = Logger()

#: Longest wait between two looks at the queue (for messages queued by
#: another process); seconds.
POLL_INTERVAL = 60.0

#: How long a claim on a message lasts beyond the relay timeout; a sender
#: that died holds its messages this long before another one retries them.
CLAIM_MARGIN = 300.0

#: The first retry waits this long; each further one twice as long as the
#: one before, up to RETRY_MAX (seconds).
RETRY_BASE = 60.0
RETRY_MAX = 3600.0

#: A message still not accepted this long after it was queued is given up
#: (RFC 5321 section 4.5.4.1 suggests four to five days).
GIVE_UP_AFTER = 5 * 86400.0

#: Messages sent at the same time.
CONCURRENCY = 4

# Running queue services by id(env), so that a commit that queued a message
# can wake the one serving its environment.
_services: dict[int, QueueService] = {}


def enqueue_message(
    txn: Any,
    env: Any,
    account_id: str,
    submission_id: str | None,
    mail_from: str,
    recipients: list[str],
    message: bytes,
    now: float,
    release_at: float,
) -> str:
    """
    Queue a message in C{txn} and wake the queue service once the
    transaction has committed.

    @return: the queue id.
    """
    queue_id = storage.enqueue(txn, account_id, submission_id, mail_from, recipients, message, now, release_at)
    txn.after_commit(lambda: wake(env))
    return queue_id


def watch(env: Any, watcher: Any) -> None:
    """
    Call C{watcher.kick()} when a transaction of C{env} has queued a message:
    for a process that queues messages without running the queue (the
    delivery spool's filing process, L{jmapd.ingest.filer}), which tells the
    server's process.
    """
    _services[id(env)] = watcher


def wake(env: Any) -> None:
    """
    Make the queue service of C{env}, if one runs, look at the queue now.
    """
    service = _services.get(id(env))
    if service is not None:
        service.kick()


def backoff(attempts: int, base: float = RETRY_BASE, maximum: float = RETRY_MAX) -> float:
    """
    The wait before the next attempt after C{attempts} failed ones
    (counting the one that just failed).
    """
    return float(min(base * (2 ** max(attempts - 1, 0)), maximum))


def delivery_status(reply: Reply, final: bool) -> dict[str, str]:
    """
    The DeliveryStatus (RFC 8621 section 7) for a recipient after a reply:
    accepted by the relay is "unknown" (relayed, fate unknown), refused for
    good (or given up) is "no", anything else is still "queued".
    """
    if reply.accepted:
        delivered = "unknown"
    elif reply.permanent or final:
        delivered = "no"
    else:
        delivered = "queued"
    return {"smtpReply": reply.text, "delivered": delivered, "displayed": "unknown"}


class QueueService(Service):
    """
    Send due messages from the outgoing queue through the relay.

    @param clock: what time comes from (default: C{env.clock}).
    @param relay: the L{Relay} (default: the one the configuration names).
    """

    name = "submission-queue"

    def __init__(
        self,
        env: Any,
        reactor: Any,
        clock: Any = None,
        relay: Relay | None = None,
        retry_base: float = RETRY_BASE,
        retry_max: float = RETRY_MAX,
        give_up_after: float = GIVE_UP_AFTER,
        concurrency: int = CONCURRENCY,
    ) -> None:
        self.env = env
        self.reactor = reactor
        self.clock = clock if clock is not None else env.clock
        self.relay = relay if relay is not None else Relay.from_config(env.config, reactor)
        self.retry_base = retry_base
        self.retry_max = retry_max
        self.give_up_after = give_up_after
        self.concurrency = concurrency
        self._inflight: dict[str, Deferred[Any]] = {}
        self._polling = False
        # The look at the queue in progress (its claims are handed back
        # before stopService's Deferred fires).
        self._poll: Deferred[Any] | None = None
        self._again = False
        self._timer: Any = None
        self._idle_waiters: list[Deferred[None]] = []

    def now(self) -> float:
        return float(self.clock.seconds())

    # -- lifetime ----------------------------------------------------------

    def startService(self) -> None:
        super().startService()
        _services[id(self.env)] = self
        log.info(
            "sending through the SMTP relay {host}:{port} ({tls})",
            host=self.relay.host,
            port=self.relay.port,
            tls=self.relay.tls,
        )
        self.kick()

    def stopService(self) -> Deferred[None]:
        """
        Stop looking at the queue, abandon the sessions in flight (their
        messages were not accepted, so they go back to the queue), and
        release their claims so the next start sends them at once.
        """
        super().stopService()
        if _services.get(id(self.env)) is self:
            del _services[id(self.env)]
        self._cancel_timer()
        inflight = list(self._inflight)
        for d in list(self._inflight.values()):
            d.cancel()
        self._inflight.clear()
        self._fire_idle()
        waits = []
        if inflight:
            d = self.env.database.run_interaction(storage.release, inflight, write=True)
            d.addErrback(lambda f: log.failure("could not release the claims on {ids}", f, ids=inflight))
            waits.append(d)
        if self._poll is not None:
            # Its claims are released (by _claimed) while the worker pool,
            # which stops after this service, still takes work.
            waits.append(when_finished(self._poll))
        if not waits:
            return succeed(None)
        return DeferredList(waits).addCallback(lambda _: None)

    # -- polling -----------------------------------------------------------

    def kick(self) -> None:
        """
        Look at the queue now (or as soon as the current look is over).
        """
        if not self.running:
            return
        if self._polling:
            self._again = True
            return
        self._cancel_timer()
        self._polling = True
        self._again = False
        free = self.concurrency - len(self._inflight)
        d = self.env.database.run_interaction(self._claim, self.now(), free, list(self._inflight), write=True)
        d.addCallbacks(self._claimed, self._poll_failed)
        self._poll = d

        def polled(result: Any) -> Any:
            if self._poll is d:
                self._poll = None
            return result

        d.addBoth(polled)

    def _claim(
        self, txn: Any, now: float, free: int, busy: list[str]
    ) -> tuple[list[storage.QueuedMessage], float | None, float]:
        lease = self.relay.timeout * 4 + CLAIM_MARGIN
        claimed = storage.claim_due(txn, now, lease, free, busy) if free > 0 else []
        return claimed, storage.next_due(txn), now

    def _claimed(self, result: tuple[list[storage.QueuedMessage], float | None, float]) -> Deferred[None] | None:
        claimed, next_due, claimed_at = result
        self._polling = False
        if not self.running:
            # Stopped while claiming: hand the claims back (stopService
            # waits for this).
            self._fire_idle()
            if not claimed:
                return None
            released = self.env.database.run_interaction(storage.release, [m.id for m in claimed], write=True)
            return released.addErrback(lambda f: log.failure("could not release claims", f))
        for message in claimed:
            self._start(message)
        now = self.now()
        if self._again or (next_due is not None and claimed_at < next_due <= now):
            # Queued, or due, while we were looking.
            self.kick()
            return None
        if next_due is None or next_due <= claimed_at:
            # Nothing waits, or what is due waits for a free sender (a
            # finished send looks again): look again later in any case,
            # for messages other processes queue.
            self._schedule(POLL_INTERVAL)
        else:
            self._schedule(min(next_due - now, POLL_INTERVAL))
        self._check_idle()
        return None

    def _poll_failed(self, failure: Any) -> None:
        self._polling = False
        log.failure("the outgoing queue could not be read", failure)
        if self.running:
            self._schedule(POLL_INTERVAL)
        self._check_idle()

    def _schedule(self, delay: float) -> None:
        self._cancel_timer()
        if self.running:
            self._timer = self.clock.callLater(max(delay, 0.0), self._timer_fired)

    def _timer_fired(self) -> None:
        self._timer = None
        self.kick()

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            if self._timer.active():
                self._timer.cancel()
            self._timer = None

    # -- sending -----------------------------------------------------------

    def _start(self, message: storage.QueuedMessage) -> None:
        log.debug(
            "relaying {queue_id} from <{mail_from}> to {count} recipients (attempt {attempt})",
            queue_id=message.id,
            mail_from=message.mail_from,
            count=len(message.recipients),
            attempt=message.attempts + 1,
        )
        d = self.relay.send(message.mail_from, message.recipients, message.message)
        self._inflight[message.id] = d

        def sent(replies: dict[str, Reply]) -> Any:
            if not self.running:
                return None
            return self.env.database.run_interaction(self._record, message, replies, self.now(), write=True)

        def done(result: Any) -> None:
            self._inflight.pop(message.id, None)
            if self.running:
                self.kick()
            self._check_idle()

        d.addCallback(sent)
        d.addErrback(self._send_failed, message)
        d.addBoth(done)

    def _send_failed(self, failure: Any, message: storage.QueuedMessage) -> None:
        if failure.check(CancelledError):
            return
        log.failure("relaying {queue_id} failed", failure, queue_id=message.id)

    def _record(self, txn: Any, message: storage.QueuedMessage, replies: dict[str, Reply], now: float) -> None:
        """
        Record an attempt's replies: done, retried or given up per
        recipient, on the queue row and on the EmailSubmission.
        """
        retry = [a for a in message.recipients if not (replies.get(a) and (replies[a].accepted or replies[a].permanent))]
        give_up = bool(retry) and now - message.created_at >= self.give_up_after
        accepted = [a for a in message.recipients if replies.get(a) and replies[a].accepted]
        refused = [a for a in message.recipients if replies.get(a) and replies[a].permanent]
        if retry and not give_up:
            delay = backoff(message.attempts + 1, self.retry_base, self.retry_max)
            last = replies.get(retry[0]) or temporary("4.4.0", "no reply")
            storage.reschedule(txn, message.id, retry, now + delay, last.text)
        else:
            storage.remove_queued(txn, message.id)
        log.info(
            "relayed {queue_id}: {accepted} accepted, {refused} refused, {retry} {later}",
            queue_id=message.id,
            accepted=len(accepted),
            refused=len(refused),
            retry=len(retry),
            later="given up" if give_up else "to retry",
        )
        if message.submission_id is None:
            return
        # Locked before it is read: a DSN filed meanwhile (jmapd.mail.reports)
        # writes the same deliveryStatus.
        txn.lock_account(message.account_id)
        found = storage.get_submissions(txn, message.account_id, [message.submission_id])
        if not found:
            return  # The EmailSubmission was destroyed; the delivery goes on.
        submission = found[0]
        status = dict(submission.delivery_status or {})
        for address in message.recipients:
            reply = replies.get(address) or temporary("4.4.0", "no reply")
            new = delivery_status(reply, final=give_up)
            current = status.get(address) or {}
            if new["delivered"] == "unknown" and current.get("delivered") in ("yes", "no"):
                # A DSN for this recipient arrived before this attempt was
                # recorded: what it said is more than "the relay took it".
                continue
            new["displayed"] = current.get("displayed", "unknown")
            status[address] = new
        finished = not retry or give_up
        anything_relayed = any(s.get("delivered") in ("unknown", "yes") for s in status.values())
        undo = "final" if (finished or anything_relayed) else None
        storage.set_status(txn, message.account_id, submission.id, undo_status=undo, delivery_status=status)
        changed = txn.__dict__.get("changed_states")
        if changed:
            env = self.env
            txn.after_commit(lambda: env.publish_states(changed))

    # -- for tests and shutdown -------------------------------------------

    def when_idle(self) -> Deferred[None]:
        """
        A L{Deferred} that fires once nothing is being claimed, sent or
        recorded (messages may still wait for a later time).
        """
        d: Deferred[None] = Deferred()
        self._idle_waiters.append(d)
        self._check_idle()
        return d

    def _check_idle(self) -> None:
        if not self._polling and not self._inflight and not self._again:
            self._fire_idle()

    def _fire_idle(self) -> None:
        waiters, self._idle_waiters = self._idle_waiters, []
        for d in waiters:
            d.callback(None)


def queue_service(env: Any, reactor: Any) -> Service:
    """
    The queue service for the jmapd service (add it when
    L{jmapd.submission.sending_enabled}).
    """
    return QueueService(env, reactor)


__all__ = ["QueueService", "enqueue_message", "queue_service", "wake", "backoff"]
