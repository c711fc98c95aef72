# -*- test-case-name: tests.test_service -*-
"""
The embeddable jmapd service.

C{makeService(config, reactor)} returns a L{MultiService} holding the worker
pool, the web listener and the periodic jobs; another Twisted application
can add it to its own service hierarchy (see docs/embedding.md).  Nothing
here touches the global reactor: it is passed in.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import attrs
from twisted.application.internet import TimerService
from twisted.application.service import MultiService, Service
from twisted.internet.defer import Deferred, fail, inlineCallbacks, maybeDeferred
from twisted.internet.endpoints import serverFromString
from twisted.internet.error import CannotListenError
from twisted.logger import Logger

from jmapd import push
from jmapd.auth.checkers import make_portal
from jmapd.blobs.database import open_blob_store
from jmapd.blobs.writeback import MOVE_INTERVAL
from jmapd.config import derived_url
from jmapd.endpoints import jmap_endpoint
from jmapd.environment import Environment
from jmapd.protocol import core
from jmapd.protocol.engine import Registry
from jmapd.storage import blobs as blob_storage
from jmapd.storage import changelog, open_database, search
from jmapd.storage import identities as identity_storage
from jmapd.storage import principals as principal_storage
from jmapd.util.tticache import TTICache
from jmapd.web.auth import Authenticator
from jmapd.web.root import JMAPSite, build_root
from jmapd.workers import WorkerPoolService

log = Logger()

#: How often expired uploads are removed and the changelog is compacted.
MAINTENANCE_INTERVAL = 60.0

#: How many not yet indexed Emails one maintenance run indexes.
BACKFILL_BATCH = 500

#: How often (and at start) the blob files' directories are looked through
#: for temporary files a crash left behind, and how long such a file must
#: have been left unchanged to be removed: far longer than any write.
LEFTOVERS_INTERVAL = 24 * 3600.0
LEFTOVER_AGE = 3600.0


class StartupError(Exception):
    """
    The service cannot start (for example, the port is in use); the
    message says why in an operator's words.
    """


def build_registry(config: Any = None) -> Registry:
    """
    Every capability and method this server implements.
    """
    from jmapd import mail

    registry = Registry()
    core.register(registry)
    mail.register(registry)
    push.register(registry)
    if config is not None:
        # Identity and EmailSubmission depend on the configuration: with no
        # smtp-relay-host there is no sending, and nothing is advertised.
        from jmapd.mail import identity, submission

        identity.register(registry, config)
        submission.register(registry, config)
    return registry


def _describe(error: Exception) -> str:
    """
    One line for an exception from loading a certificate: pyOpenSSL's
    errors are lists of (library, function, reason) tuples.
    """
    text = str(error) or type(error).__name__
    return " ".join(text.split())


class WebService(Service):
    """
    Listen on the JMAP endpoint and serve the resource tree.
    """

    name = "web"

    def __init__(self, reactor: Any, env: Environment, notifier: Any = None) -> None:
        self._reactor = reactor
        self._env = env
        self._notifier = notifier
        self.port: Any = None
        self.site: Any = None
        self.listening: Deferred[Any] | None = None
        self.startup_error: StartupError | None = None

    def privilegedStartService(self) -> None:
        """
        Listen, as L{StreamServerEndpointService} does: twistd calls this
        before it drops privileges (so port 443 can be bound by a server
        that then runs as an unprivileged user) and before any service's
        C{startService}, so a port in use is known before a worker thread
        exists.  For TCP and TLS the listen happens at once: when this
        returns, C{startup_error} holds the reason it failed (twistd's
        plugin exits with it) and L{listening} fails with a
        L{StartupError}.
        """
        Service.privilegedStartService(self)
        if self.listening is not None:
            return
        env = self._env
        self.startup_error = None
        authenticator = Authenticator(make_portal(env.database), env.clock, env.config)
        extra = push.install(env, self._reactor, authenticator, notifier=self._notifier)
        self.site = JMAPSite(
            build_root(env, authenticator, extra),
            max_body=max(env.config.max_size_request, env.config.max_size_upload),
            request_timeout=env.config.http_request_timeout,
            reactor=self._reactor,
        )
        description = jmap_endpoint(env.config)
        try:
            # For ssl: this reads the certificate and key files.
            endpoint = serverFromString(self._reactor, description)
        except Exception as error:
            if not env.config.tls:
                raise
            self.startup_error = StartupError(
                "cannot use the certificate and key (jmap-cert-path, jmap-key-path):"
                f" {_describe(error)}"
            )
            log.critical("{error}", error=str(self.startup_error))
            self.listening = fail(self.startup_error)
            return
        self.listening = endpoint.listen(self.site)
        self.listening.addCallbacks(self._listened, self._not_listening, callbackArgs=(description,))

    def startService(self) -> None:
        """
        Start listening unless L{privilegedStartService} already did (an
        embedding application usually calls only C{startService}).
        """
        Service.startService(self)
        if self.listening is None:
            self.privilegedStartService()

    def _not_listening(self, failure: Any) -> Any:
        config = self._env.config
        failure.trap(CannotListenError)
        self.startup_error = StartupError(
            f"cannot listen on {config.jmap_bind_addr or '*'} port {config.jmap_port}"
            f" (jmap-bind-addr, jmap-port): {failure.value.socketError}"
        )
        log.critical("{error}", error=str(self.startup_error))
        raise self.startup_error

    def _listened(self, port: Any, description: str) -> Any:
        env = self._env
        self.port = port
        address = port.getHost()
        if env.config.jmap_url_defaulted:
            # The same URL the configuration derived, with the port the
            # listener really got (jmap-port 0 picks a free one).
            url = derived_url(env.config.jmap_bind_addr, address.port, env.config.tls)
            env.config = attrs.evolve(env.config, jmap_url=url)
            log.warn(
                "jmap-url is not set; advertising {url}, which only works for clients on this host",
                url=env.config.jmap_url,
            )
        log.info("JMAP listening on {description} ({url})", description=description, url=env.config.jmap_url)
        return port

    def stopService(self) -> Deferred[None] | None:
        Service.stopService(self)
        self.listening = None
        if self.port is not None:
            port, self.port = self.port, None
            return port.stopListening()  # type: ignore[no-any-return]
        return None


class JMAPService(MultiService):
    """
    The jmapd service.  Children start in this order and stop in the
    reverse one, each waiting for the previous to finish stopping: the
    worker pool (and the database behind it), on PostgreSQL the notifier
    that hears other nodes' commits (L{jmapd.push.pgnotify}), the outgoing
    mail queue, housekeeping, moving staged blobs to their files, the web
    listener, the LMTP listener, push.  So nothing accepts work before the
    pool is ready, and every listener has stopped and finished what it
    acknowledged before the pool drains.
    """

    def __init__(self, env: Environment, reactor: Any) -> None:
        super().__init__()
        from jmapd.ingest.service import lmtp_service
        from jmapd.submission import sending_enabled
        from jmapd.submission.queue import queue_service

        self.env = env
        self.reactor = reactor
        env.workers.setServiceParent(self)
        # Nodes sharing a PostgreSQL database push each other's changes;
        # the notifier stops after everything but the worker pool.
        self.notifier: Any = None
        if env.database.engine.name == "postgresql":
            from jmapd.push.pgnotify import PostgresNotifier
            from jmapd.storage.engines import node_id

            self.notifier = PostgresNotifier(env.database, reactor, env.clock, node_id(env.config))
            self.notifier.setServiceParent(self)
        if sending_enabled(env.config):
            queue_service(env, reactor).setServiceParent(self)
        self._every(MAINTENANCE_INTERVAL, self.maintain)
        if hasattr(env.blobs, "move"):
            # Staged blobs go to their files (jmapd.blobs.writeback).
            self._every(MOVE_INTERVAL, lambda: self.move_blobs())
        if hasattr(env.blobs, "remove_leftovers"):
            self._every(LEFTOVERS_INTERVAL, lambda: self.remove_leftovers())
        self.web = WebService(reactor, env, self.notifier)
        self.web.setServiceParent(self)
        self.lmtp = lmtp_service(env, reactor)
        if self.lmtp is not None:
            self.lmtp.setServiceParent(self)
        push.service(env, reactor, notifier=self.notifier).setServiceParent(self)
        #: Fires once the Identities of data written before they followed
        #: address changes are in line (see startService).
        self.identities_synced: Deferred[Any] | None = None

    def _every(self, interval: float, job: Callable[[], Any]) -> None:
        """
        Run C{job} at start and then every C{interval} seconds, on the
        reactor's clock, while this service runs.
        """
        timer = TimerService(interval, job)
        timer.clock = self.reactor
        timer.setServiceParent(self)

    @property
    def port(self) -> Any:
        return self.web.port

    def startService(self) -> None:
        super().startService()
        # Once per start, for data written before the Identities followed
        # address changes (jmapd.storage.identities).
        d = self.env.database.run_interaction(identity_storage.sync_all, write=True)

        def synced(count: int) -> None:
            if count:
                log.info("brought the Identities of {count} accounts in line with their addresses", count=count)

        d.addCallback(synced)
        d.addErrback(lambda f: log.failure("could not bring the Identities in line with the addresses", f))
        self.identities_synced = d

    @inlineCallbacks
    def stopService(self) -> Any:
        Service.stopService(self)
        try:
            for child in reversed(list(self)):
                try:
                    yield maybeDeferred(child.stopService)
                except Exception:
                    log.failure("stopping {service} failed", service=child.name or child)
        finally:
            self.env.database.close()
            # The database blob store has connections of its own.
            close_blobs = getattr(self.env.blobs, "close", None)
            if close_blobs is not None:
                close_blobs()

    def move_blobs(self) -> Deferred[Any] | None:
        """
        Move staged blobs to their files (L{jmapd.blobs.writeback}) in the
        worker pool.
        """

        def done(moved: int) -> None:
            if moved:
                log.debug("moved {count} staged blobs to their files", count=moved)

        return self._in_pool(
            self.env.blobs.move, done=done, failed="moving staged blobs to their files failed; they stay staged"
        )

    def remove_leftovers(self) -> Deferred[Any] | None:
        """
        Remove the temporary blob files that crashes left behind (see
        L{jmapd.blobs.store.FileBlobStore.remove_leftovers}), in the worker
        pool.
        """
        before = float(self.env.clock.seconds()) - LEFTOVER_AGE

        def done(removed: int) -> None:
            if removed:
                log.info("removed {count} temporary blob files left by an interrupted write", count=removed)

        return self._in_pool(
            self.env.blobs.remove_leftovers,
            before,
            done=done,
            failed="looking for temporary blob files left behind failed",
        )

    def _in_pool(
        self, job: Callable[..., Any], *args: Any, done: Callable[[Any], None], failed: str
    ) -> Deferred[Any] | None:
        """
        A timer's C{job(*args)} in the worker pool, C{done} with its result
        and a logged failure (C{failed}) otherwise; nothing once the
        workers have stopped (a timer that fires during shutdown must not
        submit work).
        """
        if not self.env.workers.running:
            return None
        d = self.env.workers.run(job, *args)
        d.addCallback(done)
        d.addErrback(lambda f: log.failure(failed, f))
        return d

    def maintain(self) -> Deferred[Any] | None:
        """
        Periodic housekeeping: expired uploads, changelog compaction and
        idle cache entries.
        """
        if not self.env.workers.running:
            return None
        env = self.env

        def work(txn: Any) -> dict[str, int]:
            now = float(env.clock.seconds())
            orphans = blob_storage.expire_blobs(txn, now)
            for blob_id in orphans:
                env.blobs.delete(blob_id)
            compacted = 0
            for account_id in changelog.accounts_over(txn, env.config.max_changelog_entries):
                compacted += changelog.compact(txn, account_id, env.config.max_changelog_entries)
                # The sharing sight log below the new floor can never be
                # asked about again.
                principal_storage.prune_sight(txn, account_id)
            indexed = 0
            if env.database.engine.name == "sqlite":
                # Emails stored before the full-text index existed (schema
                # 0005) are indexed a batch at a time.  PostgreSQL support
                # came later, so its databases have none.
                indexed = search.backfill(txn, env.blobs, BACKFILL_BATCH)
            return {"blobs": len(orphans), "tombstones": compacted, "indexed": indexed}

        def done(counts: dict[str, int]) -> None:
            for cache in env.caches.values():
                cache.expire()
            if any(counts.values()):
                log.info(
                    "maintenance: removed {blobs} expired blobs, compacted {tombstones} changelog"
                    " entries, indexed {indexed} older Emails for search",
                    **counts,
                )

        d = env.database.run_interaction(work, write=True)
        d.addCallback(done)
        d.addErrback(lambda f: log.failure("maintenance failed", f))
        return d


def make_environment(
    config: Any, reactor: Any, registry: Registry | None = None, clock: Any = None
) -> Environment:
    workers = WorkerPoolService(reactor, config.worker_pool_size)
    database = open_database(config, workers.run)
    env = Environment(
        config=config,
        registry=registry if registry is not None else build_registry(config),
        database=database,
        blobs=open_blob_store(config, database),
        clock=clock if clock is not None else reactor,
        workers=workers,
        trace=config.log_level == "trace",
    )
    env.caches["ids"] = TTICache(
        reactor, config.cache_tti_ids, max_bytes=config.cache_size_ids, name="ids"
    )
    return env


def makeService(
    config: Any, reactor: Any = None, registry: Registry | None = None, clock: Any = None
) -> JMAPService:
    """
    The jmapd service for C{config}, ready to be started or added to a
    parent service.  The database is opened and migrated here, so a schema
    problem stops start-up before anything listens.

    @param reactor: the reactor to use; the global one if omitted.
    @param registry: the methods to serve (tests pass their own).
    @param clock: what times expiries, throttles, retries and timestamps
        (the reactor if omitted; tests pass a L{task.Clock} while the
        network runs on the reactor).
    """
    if reactor is None:
        from twisted.internet import reactor as global_reactor

        reactor = global_reactor
    env = make_environment(config, reactor, registry, clock)
    return JMAPService(env, reactor)
