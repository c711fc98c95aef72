# -*- test-case-name: tests.storage.test_postgres -*-
"""
Database engines: SQLite (embedded, the default) and PostgreSQL (shared by
several nodes).  An engine is the small object through which
L{jmapd.storage.database.Database} connects, begins, commits and converts
SQL; everything above it is the same on both.
"""

from __future__ import annotations

import os
import socket
from typing import Any

#: The SQLite database file under db-path.
SQLITE_FILE = "jmapd.sqlite3"


def node_id(config: Any) -> str:
    """
    This node's name: the node-id key, or the host name.
    """
    return getattr(config, "node_id", None) or socket.gethostname()


def engine_from_config(config: Any) -> Any:
    """
    The engine the configuration names: PostgreSQL when db-url is set
    (with db-pool-size connections, by default one per worker thread),
    otherwise SQLite in db-path.
    """
    url = getattr(config, "db_url", None)
    if url:
        from jmapd.storage.engines.postgres import PostgreSQLEngine

        pool_size = getattr(config, "db_pool_size", None) or config.worker_pool_size
        return PostgreSQLEngine(url, node_id=node_id(config), pool_size=pool_size)
    from jmapd.storage.engines.sqlite import SQLiteEngine

    os.makedirs(config.db_path, exist_ok=True)
    return SQLiteEngine(os.path.join(config.db_path, SQLITE_FILE))
