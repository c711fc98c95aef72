"""
Tests for L{jmapd.storage.blobs}: expired uploads and blobs that become
referenced again while housekeeping removes them.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from jmapd.storage import blobs
from tests import pg
from tests.protocol.test_engine import add_principal, make_environment

BLOB = "G" + "0" * 40


class ExpiryTests(SynchronousTestCase):
    def test_access_goes_with_upload(self) -> None:
        """
        When a grantee's upload to a shared account expires, the access it
        gave the grantee goes with it; a later upload of other bytes keeps
        its own.
        """
        env = make_environment(self)
        alice = add_principal(env, "alice").account_id
        bob = add_principal(env, "bob").account_id
        other = "G" + "1" * 40

        def upload(txn: Any) -> None:
            blobs.add_blob(txn, alice, BLOB, 4, "text/plain", 0.0, 10.0)
            blobs.grant_blob(txn, alice, BLOB, bob)
            blobs.add_blob(txn, alice, other, 4, "text/plain", 0.0, 100.0)
            blobs.grant_blob(txn, alice, other, bob)

        env.database.run_sync(upload, write=True)
        self.assertTrue(env.database.run_sync(blobs.granted, alice, BLOB, bob))
        env.database.run_sync(blobs.expire_blobs, 20.0, write=True)
        self.assertFalse(env.database.run_sync(blobs.granted, alice, BLOB, bob))
        self.assertTrue(env.database.run_sync(blobs.granted, alice, other, bob))


class ExpiryRaceTests(SynchronousTestCase):
    def test_referenced_while_expiring(self) -> None:
        """
        When an account starts referencing a blob (add_blob, not committed
        yet) whose only other row, an upload of another account, has
        expired, housekeeping does not count the blob as unreferenced (it
        would delete its bytes under the new row): it waits for that
        transaction and sees its row.
        """
        env = make_environment(self)
        alice = add_principal(env, "alice").account_id
        bob = add_principal(env, "bob").account_id
        env.database.run_sync(blobs.add_blob, bob, BLOB, 4, "text/plain", 0.0, 10.0, write=True)
        referenced = threading.Event()
        results: dict[str, Any] = {}

        def reference(txn: Any) -> None:
            blobs.add_blob(txn, alice, BLOB, 4, "message/rfc822", 20.0, None)
            referenced.set()
            # Give housekeeping time to reach its check, which must wait
            # for this transaction.
            time.sleep(0.3)

        def housekeeping() -> None:
            referenced.wait(10)
            results["orphans"] = env.database.run_sync(blobs.expire_blobs, 20.0, write=True)

        threads = [
            threading.Thread(target=lambda: env.database.run_sync(reference, write=True)),
            threading.Thread(target=housekeeping),
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        self.assertEqual(results["orphans"], [])
        self.assertIsNone(env.database.run_sync(blobs.get_blob, bob, BLOB))
        self.assertIsNotNone(env.database.run_sync(blobs.get_blob, alice, BLOB))


pg.add_postgresql_variants(globals(), ExpiryTests, ExpiryRaceTests)
