"""
Tests for L{jmapd.util.gate}.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from jmapd.util.gate import Gate


class GateTests(SynchronousTestCase):
    def test_waitsUntilOpen(self) -> None:
        """
        Waiters fire when the gate opens, not before; once open, a new
        waiter fires at once.
        """
        gate = Gate()
        first, second = gate.wait(), gate.wait()
        self.assertNoResult(first)
        self.assertNoResult(second)
        gate.open()
        self.successResultOf(first)
        self.successResultOf(second)
        self.successResultOf(gate.wait())
