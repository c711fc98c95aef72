# -*- test-case-name: tests.storage.test_postgres -*-
"""
The full-text index of Emails on PostgreSQL: the C{FullTextIndex} of
L{jmapd.storage.search} over the tables of migration
C{0005_search.postgresql.sql}.

Each search document is a row of C{email_search} (header fields and sort
keys, as on SQLite) and a row of C{email_fts} (the text of each field, and
a generated C{tsvector} of all of them under a GIN index).  A condition on
one field (C{from}, C{subject}...) is found through the index on all the
text, then checked on that field alone.

Terms are matched like FTS5 matches them: a word as a prefix, a quoted
phrase as consecutive words, all terms of a condition required.  Words
are cut and case-folded by the C{simple} configuration, which neither
stems nor drops stop words.  Unlike FTS5's C{remove_diacritics}, accents
are kept ("cafe" does not find "Café"): folding them needs the
C{unaccent} extension, which is left to the search work on PostgreSQL.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import orjson

#: The email_fts columns each text condition searches (as on SQLite).
_COLUMNS = {
    "text": None,  # every column: the generated document
    "subject": "subject",
    "from": "from_addr",
    "to": "to_addr",
    "cc": "cc_addr",
    "bcc": "bcc_addr",
    "body": "body",
}

#: Words of a body fragment in a snippet.
_SNIPPET_WORDS = 24

_WORD = re.compile(r"\w+")


def _clean(text: str | None) -> str:
    # PostgreSQL text cannot hold NUL characters; a message may.
    return (text or "").replace("\x00", "")


def _lexemes(text: str) -> list[str]:
    return [word.casefold() for word in _WORD.findall(text)]


def tsquery(terms: Sequence[Any], joiner: str = " & ") -> str:
    """
    Terms as a C{to_tsquery} string: a word's last part as a prefix
    (C{'plan':*}), a phrase's words adjacent (C{'good' <-> 'plan'});
    a term with no word in it is dropped.
    """
    parts = []
    for term in terms:
        words = _lexemes(term.text)
        if not words:
            continue
        quoted = ["'" + word.replace("'", "''") + "'" for word in words]
        if term.phrase:
            parts.append("(" + " <-> ".join(quoted) + ")")
        else:
            quoted[-1] += ":*"
            parts.append("(" + " <-> ".join(quoted) + ")")
    return joiner.join(parts)


class PostgreSQLTextIndex:
    """
    The full-text index in PostgreSQL (tables C{email_search} and
    C{email_fts}, keyed by the Email's docid).
    """

    def add(self, txn: Any, account_id: str, email_id: str, document: Any) -> None:
        from jmapd.storage.search import unicode_casemap

        docid = txn.fetchvalue("SELECT docid FROM emails WHERE account_id = ? AND id = ?", (account_id, email_id))
        if docid is None:
            raise KeyError(email_id)
        txn.execute(
            "INSERT INTO email_search (docid, account_id, headers, sort_from, sort_to, sort_subject,"
            " key_from, key_to, key_subject) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                docid,
                account_id,
                _clean(orjson.dumps(document.headers).decode("utf-8")),
                _clean(document.sort_from),
                _clean(document.sort_to),
                _clean(document.sort_subject),
                _clean(unicode_casemap(document.sort_from)),
                _clean(unicode_casemap(document.sort_to)),
                _clean(unicode_casemap(document.sort_subject)),
            ),
        )
        txn.execute(
            "INSERT INTO email_fts (docid, account_id, subject, from_addr, to_addr, cc_addr, bcc_addr, body,"
            " attachments) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                docid,
                account_id,
                _clean(document.subject),
                _clean(document.from_),
                _clean(document.to),
                _clean(document.cc),
                _clean(document.bcc),
                _clean(document.body),
                _clean(document.attachments),
            ),
        )

    def remove(self, txn: Any, account_id: str, email_id: str) -> None:
        docid = txn.fetchvalue("SELECT docid FROM emails WHERE account_id = ? AND id = ?", (account_id, email_id))
        if docid is None:
            return
        # The email_fts row goes with it (ON DELETE CASCADE).
        txn.execute("DELETE FROM email_search WHERE docid = ?", (docid,))

    def copy(self, txn: Any, from_account_id: str, source_id: str, account_id: str, email_id: str) -> bool:
        source = txn.fetchvalue(
            "SELECT s.docid FROM emails e JOIN email_search s ON s.docid = e.docid"
            " WHERE e.account_id = ? AND e.id = ?",
            (from_account_id, source_id),
        )
        docid = txn.fetchvalue("SELECT docid FROM emails WHERE account_id = ? AND id = ?", (account_id, email_id))
        if source is None or docid is None:
            return False
        txn.execute(
            "INSERT INTO email_search (docid, account_id, headers, sort_from, sort_to, sort_subject,"
            " key_from, key_to, key_subject) SELECT ?, ?, headers, sort_from, sort_to, sort_subject,"
            " key_from, key_to, key_subject FROM email_search WHERE docid = ?",
            (docid, account_id, source),
        )
        txn.execute(
            "INSERT INTO email_fts (docid, account_id, subject, from_addr, to_addr, cc_addr, bcc_addr, body,"
            " attachments) SELECT ?, ?, subject, from_addr, to_addr, cc_addr, bcc_addr, body, attachments"
            " FROM email_fts WHERE docid = ?",
            (docid, account_id, source),
        )
        return True

    def _conditions(self, alias: str, texts: Sequence[Any]) -> tuple[str, list[Any]] | None:
        """
        The conditions on the email_fts row C{alias} for C{texts}; None
        when a text has no word in it (it matches nothing, as in FTS5).
        """
        sql: list[str] = []
        params: list[Any] = []
        for text in texts:
            query = tsquery(text.terms)
            if not query:
                return None
            sql.append(f"{alias}.document @@ to_tsquery('simple', ?)")
            params.append(query)
            column = _COLUMNS[text.field]
            if column is not None:
                sql.append(f"to_tsvector('simple', {alias}.{column}) @@ to_tsquery('simple', ?)")
                params.append(query)
        return " AND ".join(sql), params

    def match(self, account_id: str, field: str, terms: Sequence[Any]) -> tuple[str, list[Any]]:
        from jmapd.storage.search import Text

        found = self._conditions("f", [Text(field, tuple(terms))])
        if found is None:
            return "1 = 0", []
        sql, params = found
        return f"e.docid IN (SELECT f.docid FROM email_fts f WHERE f.account_id = ? AND {sql})", [account_id, *params]

    def driver(self, account_id: str, texts: Sequence[Any]) -> tuple[str, str, list[Any], str]:
        found = self._conditions("f", texts)
        sql, params = found if found is not None else ("1 = 0", [])
        return (
            "email_fts f CROSS JOIN emails e",
            f"f.account_id = ? AND {sql} AND e.docid = f.docid",
            [account_id, *params],
            "f.docid",
        )

    def header(self, name: str, value: str | None) -> tuple[str, list[Any]]:
        sql = (
            "EXISTS (SELECT 1 FROM email_search s, jsonb_array_elements(s.headers::jsonb) h"
            " WHERE s.docid = e.docid AND h->>0 = ?"
        )
        if value is None:
            return sql + ")", [name]
        return sql + " AND strpos(h->>1, ?) > 0)", [name, value]

    def string_sort(self, value: str, key: str, collation: str) -> list[str]:
        # Byte order, as SQLite compares, whatever the database's collation.
        if collation == "i;unicode-casemap":
            return [f'{key} COLLATE "C"']
        if collation == "i;ascii-casemap":
            # Exactly the ASCII letters upper-cased, as SQLite's upper().
            lower, upper = "abcdefghijklmnopqrstuvwxyz", "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
            return [f"translate({value}, '{lower}', '{upper}') COLLATE \"C\""]
        # i;ascii-numeric: strings without a leading number sort last.
        return [
            f"(CASE WHEN {value} ~ '^[0-9]' THEN 0 ELSE 1 END)",
            f"CAST(substring({value} from '^[0-9]+') AS NUMERIC)",
        ]

    def highlight(
        self,
        txn: Any,
        account_id: str,
        email_ids: Sequence[str],
        subject_terms: Sequence[Any],
        body_terms: Sequence[Any],
        marks: tuple[str, str],
    ) -> dict[str, tuple[str | None, str | None]]:
        subject_query = tsquery(subject_terms, " | ")
        body_query = tsquery(body_terms, " | ")
        if not (subject_query or body_query) or not email_ids:
            return {}
        opened, closed = marks

        def options(extra: str) -> str:
            quote = lambda text: '"' + text.replace('"', '""') + '"'  # noqa: E731
            return f"StartSel={quote(opened)}, StopSel={quote(closed)}, {extra}"

        either = " | ".join(f"({q})" for q in (subject_query, body_query) if q)
        found: dict[str, tuple[str | None, str | None]] = {}
        for start in range(0, len(email_ids), 500):
            chunk = list(email_ids[start : start + 500])
            marks_sql = ", ".join("?" * len(chunk))
            rows = txn.fetchall(
                "SELECT e.id,"
                " ts_headline('simple', f.subject, to_tsquery('simple', ?), ?),"
                " ts_headline('simple', f.body, to_tsquery('simple', ?), ?)"
                " FROM email_fts f JOIN emails e ON e.search_docid = f.docid"
                " WHERE f.document @@ to_tsquery('simple', ?) AND e.account_id = ?"
                f" AND e.id IN ({marks_sql})",
                (
                    subject_query or "''",
                    options("HighlightAll=true"),
                    body_query or "''",
                    options(f"MaxWords={_SNIPPET_WORDS}, MinWords={_SNIPPET_WORDS // 2}, MaxFragments=1,"
                            " FragmentDelimiter=\u2026"),
                    either,
                    account_id,
                    *chunk,
                ),
            )
            for email_id, subject, fragment in rows:
                found[email_id] = (
                    subject if subject_query and opened in (subject or "") else None,
                    fragment if body_query and opened in (fragment or "") else None,
                )
        return found


#: The one index of the PostgreSQL engine (it keeps no state).
TEXT_INDEX = PostgreSQLTextIndex()
