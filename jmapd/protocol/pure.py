# -*- test-case-name: tests.web.test_api -*-
"""
The transaction a request of only L{pure<jmapd.protocol.engine.Method.pure>}
methods runs in: none.
"""

from __future__ import annotations

from contextlib import nullcontext
from typing import Any, NoReturn


class NoTransaction:
    """
    Stands in for a L{jmapd.storage.database.Transaction} when the request
    reads no stored data.  Savepoints are empty; any use of the database
    is a bug in the method that was declared pure, and fails loudly (the
    engine turns it into serverFail) instead of reading without a
    transaction.
    """

    def savepoint(self) -> nullcontext[None]:
        return nullcontext()

    def _refuse(self, *args: Any, **kwargs: Any) -> NoReturn:
        raise RuntimeError("a method declared pure used the database")

    execute = executemany = fetchone = fetchall = fetchvalue = lock_account = after_commit = _refuse
