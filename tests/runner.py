"""
Run the whole trial suite and finish with the plain line CI reads:
``N passed, N failed``.

trial's own closing line (``PASSED (successes=N)`` or
``FAILED (failures=.., errors=.., successes=..)``) is kept in the output and
turned into the counts; the exit status is trial's.

Before trial, a scratch PostgreSQL server is started for the
``...OnPostgreSQL`` tests (installed from the Debian package if needed,
see L{tests.pg}) and stopped after; the first and last lines say whether
those tests ran or were skipped, and why.  On CI (``CI`` set) they must
run: no PostgreSQL is a failure, not a skip.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys

_SUMMARY = re.compile(r"^(PASSED|FAILED) \((?P<fields>[^)]*)\)\s*$")


def summarize(lines: list[str]) -> tuple[int, int]:
    """
    Turn trial's closing ``PASSED (...)``/``FAILED (...)`` line into
    ``(passed, failed)``; a run that never printed one counts as one failure.
    """
    for line in reversed(lines):
        match = _SUMMARY.match(line.strip())
        if match is None:
            continue
        counts = {}
        for field in match.group("fields").split(","):
            name, _, value = field.strip().partition("=")
            if value.isdigit():
                counts[name] = int(value)
        passed = counts.get("successes", 0) + counts.get("expectedFailures", 0)
        failed = (
            counts.get("failures", 0)
            + counts.get("errors", 0)
            + counts.get("unexpectedSuccesses", 0)
        )
        return passed, failed
    return 0, 1


def main(argv: list[str]) -> int:
    from tests import pg

    with pg.server_for_run() as (available, line):
        sys.stdout.write(line + "\n")
        sys.stdout.flush()
        if not available and os.environ.get("CI"):
            sys.stdout.write("0 passed, 1 failed\n(CI must run the PostgreSQL tests)\n")
            return 1
        status, passed, failed = run_trial(argv)
        sys.stdout.write(line + "\n")
        sys.stdout.write(f"{passed} passed, {failed} failed\n")
        sys.stdout.flush()
        return status


def run_trial(argv: list[str]) -> tuple[int, int, int]:
    """
    Run trial on C{argv} (default: every test), echoing its output;
    return its exit status and the passed and failed counts.
    """
    jobs = os.environ.get("TRIAL_JOBS", str(min(os.cpu_count() or 1, 4)))
    targets = argv or ["tests"]
    command = [sys.executable, "-m", "twisted.trial", f"--jobs={jobs}", *targets]
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    assert process.stdout is not None
    tail: list[str] = []
    for line in process.stdout:
        sys.stdout.write(line)
        tail.append(line)
        del tail[:-50]
    status = process.wait()
    passed, failed = summarize(tail)
    if status != 0 and failed == 0:
        failed = 1
    return status, passed, failed


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
