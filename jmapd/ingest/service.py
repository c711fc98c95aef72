# -*- test-case-name: tests.ingest.test_lmtp -*-
"""
The LMTP listener as a service of the jmapd service.

C{lmtp_service(env, reactor)} returns it (or C{None} when C{lmtp-port} is
0); it shares the environment (database, blob store, worker pool, push
listeners) with the web service.  On stop it stops listening, takes no new
message, lets the deliveries in progress finish (their replies are sent)
and then closes the connections that are left: an MTA whose message was
cut off retries it, and nothing was acknowledged that is not stored.
"""

from __future__ import annotations

import os
import socket
from typing import Any

from twisted.application.service import Service
from twisted.internet import ssl
from twisted.internet.defer import Deferred, fail, gatherResults, succeed
from twisted.internet.endpoints import serverFromString
from twisted.internet.error import CannotListenError
from twisted.logger import Logger

from jmapd.endpoints import endpoint_string, pem_certificates
from jmapd.ingest.delivery import Deliverer
from jmapd.ingest.filer import FilerProcess
from jmapd.ingest.lmtp import LMTPFactory
from jmapd.ingest.recipients import RecipientResolver
from jmapd.ingest.spool import SPOOL_FILE, Spool
from jmapd.ingest.spooled import SpooledDeliverer
from jmapd.storage import spoolmark
from jmapd.util.gate import Gate
from jmapd.util.tticache import TTICache
from jmapd.workers import WorkerPoolService

log = Logger()

#: Most addresses kept in the recipients cache.
RECIPIENTS_CACHE_ENTRIES = 100_000


class LMTPStartupError(Exception):
    """
    The LMTP listener cannot start; the message says why in an operator's
    words.
    """


def tls_context(config: Any) -> Any:
    """
    The STARTTLS context for C{lmtp-cert-path} and C{lmtp-key-path}, or
    C{None} when neither is set.

    @raise LMTPStartupError: only one is set, or they cannot be used.
    """
    cert, key = config.lmtp_cert_path, config.lmtp_key_path
    if cert is None and key is None:
        return None
    if cert is None or key is None:
        raise LMTPStartupError("lmtp-cert-path, lmtp-key-path: set both to offer STARTTLS, or neither")
    try:
        with open(cert, "rb") as f:
            cert_pem = f.read()
        with open(key, "rb") as f:
            key_pem = f.read()
        certificate = ssl.PrivateCertificate.loadPEM(cert_pem + b"\n" + key_pem)
        # A chain file (the server's certificate, then the intermediates)
        # is sent whole: loadPEM keeps only the first.
        chain = [ssl.Certificate.loadPEM(pem).original for pem in pem_certificates(cert_pem)[1:]]
        return ssl.CertificateOptions(
            privateKey=certificate.privateKey.original, certificate=certificate.original, extraCertChain=chain
        )
    except Exception as error:
        text = " ".join((str(error) or type(error).__name__).split())
        raise LMTPStartupError(f"cannot use the certificate and key (lmtp-cert-path, lmtp-key-path): {text}") from None


class LMTPService(Service):
    """
    Listen for LMTP and deliver what arrives.

    @param port: the port to listen on instead of C{lmtp-port} (tests
        pass 0 for any free port).
    @ivar listening: a L{Deferred} firing with the listening port once
        started (or failing with L{LMTPStartupError}).
    """

    name = "lmtp"

    def __init__(self, env: Any, reactor: Any, port: int | None = None) -> None:
        self._env = env
        self._reactor = reactor
        self._port_number = env.config.lmtp_port if port is None else port
        self.port: Any = None
        self.listening: Deferred[Any] | None = None
        self.factory: LMTPFactory | None = None
        self.deliverer: Deliverer | SpooledDeliverer | None = None
        # Delivery's own thread (without lmtp-spool), beside the worker
        # pool: it prepares, makes durable and files every group, always
        # on the same connection, so SQLite's page cache stays warm from one
        # transaction to the next (a connection that another one wrote
        # after reads every page again).
        self.filing = WorkerPoolService(reactor, 1, name="jmapd-delivery")
        # With lmtp-spool, the spool's thread (it owns the spool file's
        # connection), and once listening the spool and the filing process.
        self.spooling = WorkerPoolService(reactor, 1, name="jmapd-spool")
        self.spool: Spool | None = None
        self.filer: FilerProcess | None = None

    def privilegedStartService(self) -> None:
        """
        Listen (before twistd drops privileges and before any worker thread
        starts, so a port in use can end the process cleanly).
        """
        Service.privilegedStartService(self)
        self._listen()

    def startService(self) -> None:
        Service.startService(self)
        if self._env.config.lmtp_spool:
            self.spooling.startService()
            if self.spool is not None:
                self._open_spool()
        else:
            self.filing.startService()
        if self.listening is None:
            self._listen()

    def _listen(self) -> None:
        env = self._env
        config = env.config
        try:
            tls = tls_context(config)
        except LMTPStartupError as error:
            log.critical("{error}", error=str(error))
            self.listening = fail(error)
            return
        if config.lmtp_tls_only and tls is None:
            problem = LMTPStartupError("lmtp-tls-only needs lmtp-cert-path and lmtp-key-path")
            log.critical("{error}", error=str(problem))
            self.listening = fail(problem)
            return
        cache = env.caches.get("recipients")
        if cache is None:
            cache = TTICache(
                self._reactor, config.cache_tti_recipients, max_entries=RECIPIENTS_CACHE_ENTRIES, name="recipients"
            )
            env.caches["recipients"] = cache
        hostname = socket.gethostname() or "localhost"
        resolver = RecipientResolver(env.database, cache)
        if config.lmtp_spool:
            path = os.path.join(config.db_path, SPOOL_FILE)
            self.spool = Spool(path, self.spooling.run)
            self.filer = FilerProcess(self._reactor, config, path, hostname)
            self.deliverer = SpooledDeliverer(env, resolver, self.spool, self.filer.file_next)
        else:
            self.deliverer = Deliverer(env, resolver, hostname, run_filing=self.filing.run)
        self.factory = LMTPFactory(config, resolver, self.deliverer, self._reactor, hostname, tls)
        if self.spool is not None and self.spooling.running:
            self._open_spool()
        description = endpoint_string(config.lmtp_bind_addr, self._port_number, None, None)
        self.listening = serverFromString(self._reactor, description).listen(self.factory)
        self.listening.addCallbacks(self._listened, self._not_listening)

    def _open_spool(self) -> None:
        """
        Open the spool, read from the database how far it was filed, and
        hand delivery what it holds after that; only then does filing
        start (appends wait for the spool meanwhile).  If the spool cannot
        be opened, messages get 451 (the spool logged why).
        """
        spool, deliverer, filer, database = self.spool, self.deliverer, self.filer, self._env.database
        assert spool is not None and isinstance(deliverer, SpooledDeliverer) and filer is not None
        assert self.factory is not None
        ready = self.factory.ready = Gate()

        def started(spool_id: str) -> Deferred[None]:
            # The filing process starts now rather than with the first
            # message, which would wait for its start-up (most of a second),
            # and LMTP greets once it runs.
            filer.start(spool_id).addCallback(lambda _: ready.open())
            d: Deferred[int] = database.run_interaction(spoolmark.filed, spool_id)
            return d.addCallback(spool.open).addCallback(deliverer.recovered)

        d = spool.start().addCallback(started)
        # Messages get 451 (logged by the spool).
        d.addErrback(spool.broken).addErrback(lambda _: ready.open())

    def _listened(self, port: Any) -> Any:
        self.port = port
        address = port.getHost()
        log.info(
            "LMTP listening on {host} port {port}{tls}",
            host=address.host,
            port=address.port,
            tls=" (STARTTLS)" if self.factory is not None and self.factory.tls is not None else "",
        )
        return port

    def _not_listening(self, failure: Any) -> Any:
        failure.trap(CannotListenError)
        config = self._env.config
        error = LMTPStartupError(
            f"cannot listen for LMTP on {config.lmtp_bind_addr or '*'} port {self._port_number}"
            f" (lmtp-bind-addr, lmtp-port): {failure.value.socketError}"
        )
        log.critical("{error}", error=str(error))
        raise error

    def stopService(self) -> Deferred[None] | None:
        Service.stopService(self)
        self.listening = None
        factory, deliverer = self.factory, self.deliverer
        port, self.port = self.port, None
        if factory is None or deliverer is None:
            return self._stop_threads()
        factory.stopping = True
        stopped: Deferred[Any] = Deferred()
        stopped.callback(None)
        if port is not None:
            stopped.addCallback(lambda _: port.stopListening())
        if isinstance(deliverer, SpooledDeliverer):
            # What is acknowledged and not filed stays in the spool for the
            # next start; the group being filed is finished, the
            # acknowledgements the spool is writing are sent, and the
            # filing process ends.
            spool, filer = self.spool, self.filer
            if spool is not None:
                stopped.addCallback(lambda _: spool.idle())
            stopped.addCallback(lambda _: deliverer.stop())
            if filer is not None:
                stopped.addCallback(lambda _: filer.stop())
        else:
            stopped.addCallback(lambda _: deliverer.idle())

        def close(_: Any) -> None:
            for connection in list(factory.connections):
                transport: Any = connection.transport
                transport.loseConnection()

        stopped.addCallback(close)
        stopped.addCallback(lambda _: self._stop_threads())
        return stopped

    def _stop_threads(self) -> Deferred[Any] | None:
        """
        Stop delivery's threads (once nothing is being delivered), the
        spool's after closing it.
        """
        stops = []
        if self.filing.running:
            stops.append(self.filing.stopService())
        if self.spooling.running:
            spool, self.spool = self.spool, None
            closed = spool.close() if spool is not None else succeed(None)
            closed.addCallback(lambda _: self.spooling.stopService())
            stops.append(closed)
        if not stops:
            return None
        return gatherResults(stops).addCallback(lambda _: None)


def lmtp_service(env: Any, reactor: Any) -> LMTPService | None:
    """
    The LMTP listener for C{env}'s configuration, or C{None} when
    C{lmtp-port} is 0 (delivery off).
    """
    if not env.config.lmtp_port:
        return None
    return LMTPService(env, reactor)
