"""
Tests for L{bench.ceiling}: the ceiling answers core_echo correctly, so
the fraction jmapd reaches of it compares right answers with right ones.
"""

from __future__ import annotations

import orjson
from twisted.trial.unittest import TestCase

from bench.ceiling import echo
from bench.workloads import CoreEcho


class EchoTests(TestCase):
    def test_core_echo(self) -> None:
        """
        The ceiling's answer passes the core_echo workload's check.
        """
        workload = CoreEcho()
        (request,) = workload.requests(None, None)
        status, body = echo(orjson.dumps(request))
        self.assertEqual(status, 200)
        workload.check(None, None, request, orjson.loads(body))

    def test_other_methods(self) -> None:
        """
        Any other method is unknownMethod, so other workloads skip it.
        """
        _, body = echo(b'{"using":[],"methodCalls":[["Email/get",{},"0"]]}')
        self.assertEqual(orjson.loads(body)["methodResponses"], [["error", {"type": "unknownMethod"}, "0"]])

    def test_not_json(self) -> None:
        """
        A body that is not a Request is a 400.
        """
        self.assertEqual(echo(b"{")[0], 400)
