# -*- test-case-name: tests.test_tap -*-
"""
The twistd plugin's options and service maker: C{twistd -n jmapd --config
FILE [--set key=value]...}.

A configuration problem is a L{UsageError}, so twistd prints every problem
and exits before anything binds.
"""

from __future__ import annotations

import os
from typing import Any

from twisted.application.service import MultiService, Service
from twisted.python import usage

from jmapd.config import ConfigError, load_config
from jmapd.logging import LevelFilter

#: The environment variable naming the configuration file when --config is
#: not given (as for jmapd-admin).
CONFIG_VARIABLE = "JMAPD_CONFIG"


class Options(usage.Options):
    synopsis = "--config FILE [--set key=value ...]"
    longdesc = "Serve JMAP (RFC 8620, RFC 8621) as configured in FILE."

    optParameters = [
        ["config", "c", None, "The YAML configuration file (default: $JMAPD_CONFIG)."],
    ]

    def __init__(self) -> None:
        super().__init__()
        self["set"] = []
        self.config: Any = None

    def opt_set(self, value: str) -> None:
        """
        Override one configuration key, as key=value (repeatable).
        """
        self["set"].append(value)

    def postOptions(self) -> None:
        path = self["config"] or os.environ.get(CONFIG_VARIABLE) or None
        if path is None:
            raise usage.UsageError(f"--config FILE is required (or set {CONFIG_VARIABLE})")
        # JMAPD_CONFIG names the file; it is not a configuration key, and
        # load_config rejects JMAPD_* variables that name no key.
        environ = {name: value for name, value in os.environ.items() if name != CONFIG_VARIABLE}
        try:
            self.config = load_config(path, environ, self["set"])
        except ConfigError as e:
            raise usage.UsageError(str(e)) from None


class _LogLevelService(Service):
    """
    Apply log-level to twistd's observers while the server runs.

    It is installed in L{privilegedStartService}, which twistd calls on
    this service before the listeners', so that what they log while they
    bind (C{JMAP listening on ...}, the jmap-url warning) is filtered and
    labelled with the node like every later line.
    """

    def __init__(self, log_level: str, node: str | None = None) -> None:
        self._filter = LevelFilter(log_level, node=node)

    def privilegedStartService(self) -> None:
        super().privilegedStartService()
        self._filter.install()

    def startService(self) -> None:
        super().startService()
        self._filter.install()

    def stopService(self) -> None:
        super().stopService()
        self._filter.uninstall()

    def abandon(self) -> None:
        """
        Give twistd's observers back when start-up fails, so that nothing
        of the service is left behind by the exit.
        """
        self._filter.uninstall()


class _TwistdService(MultiService):
    """
    What twistd runs: exit with the reason, not a traceback, when the
    service cannot start (a port in use, an unusable certificate).

    twistd calls L{privilegedStartService} on the whole tree before any
    C{startService}; the listener binds there, so the exit happens before
    a worker thread or the periodic jobs start (a started thread pool would
    keep the process from exiting).
    """

    def __init__(self, jmap: Any) -> None:
        super().__init__()
        self.jmap = jmap

    def privilegedStartService(self) -> None:
        super().privilegedStartService()
        web = self.jmap.web
        if web.startup_error is not None:
            web.listening.addErrback(lambda _: None)
            self._abandon()
            raise SystemExit(f"jmapd: {web.startup_error}")
        lmtp = self.jmap.lmtp
        if lmtp is not None and lmtp.listening is not None:
            failures: list[Any] = []
            lmtp.listening.addErrback(failures.append)
            if failures:
                self._abandon()
                raise SystemExit(f"jmapd: {failures[0].value}")

    def _abandon(self) -> None:
        for child in self:
            if isinstance(child, _LogLevelService):
                child.abandon()

    def startService(self) -> None:
        if self.jmap.web.listening is None:
            self.privilegedStartService()
        super().startService()


def makeService(options: Options) -> MultiService:
    from twisted.internet import reactor

    from jmapd.service import StartupError
    from jmapd.service import makeService as make_jmap_service
    from jmapd.storage.migrations import SchemaTooNew

    try:
        jmap = make_jmap_service(options.config, reactor)
    except (SchemaTooNew, StartupError, OSError) as e:
        raise SystemExit(f"jmapd: {e}") from None
    top = _TwistdService(jmap)
    _LogLevelService(options.config.log_level, options.config.node_id).setServiceParent(top)
    jmap.setServiceParent(top)
    return top
