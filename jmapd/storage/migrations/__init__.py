# -*- test-case-name: tests.storage.test_database -*-
"""
Versioned schema migrations, applied in order at start-up.

Each migration is a file C{NNNN_name.sql} next to this module, written in
the SQL both engines share; the engine's C{convert_sql} handles the few
differences.  The version is kept in C{schema_version}; a database from a
newer jmapd (a version above the highest known one) is refused instead of
being used with the wrong schema.
"""

from __future__ import annotations

import os
import re
from typing import Any

_MIGRATION = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")


class SchemaTooNew(Exception):
    """
    The database was written by a newer jmapd than this one.
    """


def migrations() -> list[tuple[int, str]]:
    """
    The known migrations as C{(version, sql)}, lowest first.
    """
    here = os.path.dirname(os.path.abspath(__file__))
    found = []
    for name in sorted(os.listdir(here)):
        match = _MIGRATION.match(name)
        if match:
            with open(os.path.join(here, name), encoding="utf-8") as f:
                found.append((int(match.group(1)), f.read()))
    return found


def _statements(sql: str) -> list[str]:
    # Comments run to the end of the line; our SQL has no "--" in strings.
    lines = [line.split("--", 1)[0] for line in sql.splitlines()]
    return [s.strip() for s in "\n".join(lines).split(";") if s.strip()]


def apply_migrations(engine: Any, conn: Any) -> int:
    """
    Apply every migration above the database's version, each in its own
    transaction, and return the resulting version.
    """
    cursor = conn.cursor()
    engine.begin(conn, True)
    try:
        cursor.execute(
            "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)"
        )
        cursor.execute("SELECT max(version) FROM schema_version")
        row = cursor.fetchone()
        current = row[0] if row and row[0] is not None else 0
        engine.commit(conn)
    except BaseException:
        engine.rollback(conn)
        raise
    known = migrations()
    highest = known[-1][0] if known else 0
    if current > highest:
        raise SchemaTooNew(
            f"the database schema is version {current}, but this jmapd knows "
            f"versions up to {highest}: upgrade jmapd"
        )
    for version, sql in known:
        if version <= current:
            continue
        engine.begin(conn, True)
        try:
            for statement in _statements(sql):
                cursor.execute(engine.convert_sql(statement))
            cursor.execute(engine.convert_sql("INSERT INTO schema_version (version) VALUES (?)"), (version,))
            engine.commit(conn)
        except BaseException:
            engine.rollback(conn)
            raise
        current = version
    return current
