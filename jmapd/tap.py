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
        path = self["config"] or os.environ.get("JMAPD_CONFIG")
        if path is None:
            raise usage.UsageError("--config FILE is required (or set JMAPD_CONFIG)")
        try:
            self.config = load_config(path, os.environ, self["set"])
        except ConfigError as e:
            raise usage.UsageError(str(e)) from None


class _LogLevelService(Service):
    """
    Apply log-level to twistd's observers while the server runs.
    """

    def __init__(self, log_level: str) -> None:
        self._filter = LevelFilter(log_level)

    def startService(self) -> None:
        super().startService()
        self._filter.install()

    def stopService(self) -> None:
        super().stopService()
        self._filter.uninstall()


class _TwistdService(MultiService):
    """
    What twistd runs: exit with the reason, not a traceback, when the
    service cannot start (a port in use).
    """

    def __init__(self, jmap: Any) -> None:
        super().__init__()
        self.jmap = jmap

    def startService(self) -> None:
        super().startService()
        error = self.jmap.web.startup_error
        if error is not None:
            self.jmap.web.listening.addErrback(lambda _: None)
            raise SystemExit(f"jmapd: {error}")


def makeService(options: Options) -> MultiService:
    from twisted.internet import reactor

    from jmapd.service import StartupError, makeService as make_jmap_service
    from jmapd.storage.migrations import SchemaTooNew

    try:
        jmap = make_jmap_service(options.config, reactor)
    except (SchemaTooNew, StartupError, OSError) as e:
        raise SystemExit(f"jmapd: {e}") from None
    top = _TwistdService(jmap)
    _LogLevelService(options.config.log_level).setServiceParent(top)
    jmap.setServiceParent(top)
    return top
