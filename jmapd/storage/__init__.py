"""
Storage: the database behind a small interface, and one module per group of
tables.  Nothing here imports the JMAP protocol or data type modules.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

DATABASE_FILE = "jmapd.sqlite3"


def open_database(config: Any, run_in_thread: Callable[..., Any] | None = None) -> Any:
    """
    The database the configuration names (SQLite under C{db-path}),
    migrated to the current schema.
    """
    # Imported for what they register: new accounts get their default
    # Mailboxes whoever creates them (the server or jmapd-admin).
    import jmapd.storage.mailboxes  # noqa: F401
    from jmapd.storage.database import Database
    from jmapd.storage.engines.sqlite import SQLiteEngine

    os.makedirs(config.db_path, exist_ok=True)
    database = Database(SQLiteEngine(os.path.join(config.db_path, DATABASE_FILE)), run_in_thread)
    database.migrate()
    return database


def blob_directory(config: Any) -> str:
    return os.path.join(config.db_path, "blobs")
