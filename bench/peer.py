# -*- test-case-name: tests.bench.test_targets -*-
"""
The comparison peer: Cyrus IMAP 3.6 with its JMAP module, started from
the Debian packages by the scripts in C{../shared/peers/cyrus/} (see their
README) in a scratch directory, on free ports of 127.0.0.1, with one user.

Cyrus runs as a master process forking service processes; the suite
starts it pinned to the same CPU as jmapd so both servers get one core
and the load client the other.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile

from attrs import define

from bench.targets import TargetError, TargetSpec, free_port

__all__ = ["CyrusPeer", "PEER_DIR", "PACKAGES"]

PEER_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "..", "shared", "peers",
                        "cyrus")

#: What C{make bench-peer} installs when missing.
PACKAGES = ("cyrus-imapd", "cyrus-clients", "cyrus-admin", "sasl2-bin", "cyrus-caldav")

USER = "bench"


@define
class CyrusPeer:
    workdir: str
    spec: TargetSpec
    environment: dict[str, str]
    peer_dir: str = PEER_DIR

    @classmethod
    def start(cls, name: str = "cyrus", workdir: str | None = None, cpus: set[int] | None = None,
              peer_dir: str = PEER_DIR) -> CyrusPeer:
        up = os.path.join(peer_dir, "up.sh")
        if not os.path.exists(up):
            raise TargetError(f"{name}: {up} is missing")
        if not os.path.exists("/usr/lib/cyrus/bin/httpd"):
            raise TargetError(f"{name}: Cyrus is not installed; apt-get install -y {' '.join(PACKAGES)}")
        workdir = workdir or tempfile.mkdtemp(prefix="cyrus-bench-")
        password = "bench-secret"
        environment = {
            **os.environ,
            "CYRDIR": workdir,
            "HTTP_PORT": str(free_port()),
            "IMAP_PORT": str(free_port()),
            "USERS": USER,
            "PASSWORD": password,
        }

        def pin() -> None:
            if cpus:
                os.sched_setaffinity(0, cpus)

        done = subprocess.run(["sh", up], env=environment, capture_output=True, preexec_fn=pin, timeout=180)
        if done.returncode != 0:
            raise TargetError(f"{name}: up.sh failed ({done.returncode}): {done.stderr.decode()[-2000:]}")
        url = done.stdout.decode().strip().splitlines()[-1]
        return cls(workdir, TargetSpec(name, url, USER, password), environment, peer_dir)

    def stop(self, remove: bool = True) -> None:
        down = os.path.join(self.peer_dir, "down.sh")
        subprocess.run(["sh", down], env=self.environment, capture_output=True, timeout=60)
        if remove:
            shutil.rmtree(self.workdir, ignore_errors=True)
