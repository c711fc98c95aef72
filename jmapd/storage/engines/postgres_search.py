# -*- test-case-name: tests.storage.test_search -*-
"""
The full-text index of Emails on PostgreSQL: the C{FullTextIndex} of
L{jmapd.storage.search} over the tables of migration
C{0005_search.postgresql.sql}.

Each search document is a row of C{email_search} (header fields and sort
keys, as on SQLite) and a row of C{email_fts} (the text of each field, and
a generated C{tsvector} of all of them under a GIN index).  Both are keyed
by (account, docid): on PostgreSQL a docid is unique only within its
account (see the migration).  A condition on one field (C{from},
C{subject}...) is found through the index on all the text, then checked
on that field alone.

Terms are matched like FTS5 matches them: a word as a prefix, a quoted
phrase as consecutive words, all terms of a condition required.  Words
are cut at white space and ASCII punctuation (as the migration does for
the document) and folded by the C{jmapd_search} configuration: accents
removed (C{unaccent}), case folded, no stemming, no stop words.

What differs from FTS5: PostgreSQL folds case with the database's
C{LC_CTYPE} (under the C locale, only ASCII letters; accents are still
removed), and a statement that reads the index first does not get the
matches in docid order, so a text search sorts its matches.
"""

from __future__ import annotations

import re
import string
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

#: Words of a body fragment in a snippet (FTS5's snippet() on SQLite).
_SNIPPET_WORDS = 24

#: Words of context kept before the first match in a snippet.
_SNIPPET_BEFORE = 6

_PUNCTUATION = string.punctuation
_SEPARATORS = re.compile("[\\s" + re.escape(_PUNCTUATION) + "]+")
_CHUNK = 500


def _fold(column: str) -> str:
    """
    SQL for the text of C{column} as the document reads it: ASCII
    punctuation as spaces (the expression of the migration).
    """
    quoted = _PUNCTUATION.replace("'", "''")
    return f"translate({column}, '{quoted}', '{' ' * len(_PUNCTUATION)}')"


def _clean(text: str | None) -> str:
    # PostgreSQL text cannot hold NUL characters; a message may.
    return (text or "").replace("\x00", "")


def _words(text: str) -> list[str]:
    return [word for word in _SEPARATORS.split(text) if word]


def tsquery(terms: Sequence[Any], joiner: str = " & ") -> str:
    """
    Terms as a C{to_tsquery} string (for the C{jmapd_search}
    configuration, which folds case and accents): a word as a prefix
    (C{'plan':*}), the words of a phrase adjacent (C{'good' <-> 'plan'}),
    those of a word with punctuation in it adjacent too, the last as a
    prefix, as FTS5 reads C{"plan.pdf"*}; a term with no word in it is
    dropped.
    """
    parts = []
    for term in terms:
        words = _words(term.text)
        if not words:
            continue
        quoted = ["'" + word + "'" for word in words]
        if not term.phrase:
            quoted[-1] += ":*"
        parts.append("(" + " <-> ".join(quoted) + ")")
    return joiner.join(parts)


def _window(text: str, opened: str, closed: str) -> str | None:
    """
    About L{_SNIPPET_WORDS} words of highlighted text around its first
    match, with an ellipsis where it is cut (as FTS5's snippet()).
    """
    at = text.find(opened)
    if at < 0:
        return None
    spans = [match.span() for match in re.finditer(r"\S+", text)]
    first = next(n for n, (start, end) in enumerate(spans) if end > at)
    start = max(0, min(first - _SNIPPET_BEFORE, len(spans) - _SNIPPET_WORDS))
    end = min(len(spans), start + _SNIPPET_WORDS)
    fragment = text[spans[start][0] : spans[end - 1][1]]
    if fragment.count(opened) > fragment.count(closed):
        fragment += closed
    if fragment.count(closed) > fragment.count(opened):
        fragment = opened + fragment
    return ("\u2026" if start > 0 else "") + fragment + ("\u2026" if end < len(spans) else "")


class PostgreSQLTextIndex:
    """
    The full-text index in PostgreSQL (tables C{email_search} and
    C{email_fts}, keyed by the account and the Email's docid).
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
        # The email_fts row goes with it (ON DELETE CASCADE).
        txn.execute(
            "DELETE FROM email_search WHERE account_id = ?"
            " AND docid = (SELECT docid FROM emails WHERE account_id = ? AND id = ?)",
            (account_id, account_id, email_id),
        )

    def copy(self, txn: Any, from_account_id: str, source_id: str, account_id: str, email_id: str) -> bool:
        source = txn.fetchvalue(
            "SELECT s.docid FROM emails e JOIN email_search s ON s.account_id = e.account_id AND s.docid = e.docid"
            " WHERE e.account_id = ? AND e.id = ?",
            (from_account_id, source_id),
        )
        docid = txn.fetchvalue("SELECT docid FROM emails WHERE account_id = ? AND id = ?", (account_id, email_id))
        if source is None or docid is None:
            return False
        txn.execute(
            "INSERT INTO email_search (docid, account_id, headers, sort_from, sort_to, sort_subject,"
            " key_from, key_to, key_subject) SELECT ?, ?, headers, sort_from, sort_to, sort_subject,"
            " key_from, key_to, key_subject FROM email_search WHERE account_id = ? AND docid = ?",
            (docid, account_id, from_account_id, source),
        )
        txn.execute(
            "INSERT INTO email_fts (docid, account_id, subject, from_addr, to_addr, cc_addr, bcc_addr, body,"
            " attachments) SELECT ?, ?, subject, from_addr, to_addr, cc_addr, bcc_addr, body, attachments"
            " FROM email_fts WHERE account_id = ? AND docid = ?",
            (docid, account_id, from_account_id, source),
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
            sql.append(f"{alias}.document @@ to_tsquery('jmapd_search', ?)")
            params.append(query)
            column = _COLUMNS[text.field]
            if column is not None:
                sql.append(f"to_tsvector('jmapd_search', {_fold(alias + '.' + column)}) @@ to_tsquery('jmapd_search', ?)")
                params.append(query)
        return " AND ".join(sql), params

    def match(self, account_id: str, field: str, terms: Sequence[Any]) -> tuple[str, list[Any]]:
        from jmapd.storage.search import Text

        found = self._conditions("f", [Text(field, tuple(terms))])
        if found is None:
            return "1 = 0", []
        sql, params = found
        return (
            f"EXISTS (SELECT 1 FROM email_fts f WHERE f.account_id = e.account_id AND f.docid = e.docid AND {sql})",
            params,
        )

    def driver(self, account_id: str, texts: Sequence[Any]) -> tuple[str, str, list[Any], str]:
        found = self._conditions("f", texts)
        sql, params = found if found is not None else ("1 = 0", [])
        return (
            "email_fts f CROSS JOIN emails e",
            f"f.account_id = ? AND {sql} AND e.account_id = f.account_id AND e.docid = f.docid",
            [account_id, *params],
            "f.docid",
        )

    def header(self, name: str, value: str | None) -> tuple[str, list[Any]]:
        sql = (
            "EXISTS (SELECT 1 FROM email_search s, jsonb_array_elements(s.headers::jsonb) h"
            " WHERE s.account_id = e.account_id AND s.docid = e.docid AND h->>0 = ?"
        )
        if value is None:
            return sql + ")", [name]
        return sql + " AND strpos(h->>1, ?) > 0)", [name, value]

    def string_sort(self, value: str, key: str, collation: str) -> list[str]:
        # Code point order, as SQLite compares, whatever the database's collation.
        if collation == "i;unicode-casemap":
            return [f'{key} COLLATE "C"']
        if collation == "i;ascii-casemap":
            # Exactly the ASCII letters upper-cased, as SQLite's upper().
            lower, upper = string.ascii_lowercase, string.ascii_uppercase
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
        quote = lambda text: '"' + text.replace('"', '""') + '"'  # noqa: E731
        # The whole text highlighted (FTS5's highlight()); the body is cut
        # to a fragment here, as FTS5's snippet() does.
        options = f"StartSel={quote(opened)}, StopSel={quote(closed)}, HighlightAll=true"
        either = " | ".join(f"({q})" for q in (subject_query, body_query) if q)
        merge = any(t.phrase for t in (*subject_terms, *body_terms))
        found: dict[str, tuple[str | None, str | None]] = {}
        for start in range(0, len(email_ids), _CHUNK):
            chunk = list(email_ids[start : start + _CHUNK])
            columns, params = [], []
            for query, column in ((subject_query, "f.subject"), (body_query, "f.body")):
                if query:
                    columns.append(f"ts_headline('jmapd_search', {column}, to_tsquery('jmapd_search', ?), ?)")
                    params.extend([query, options])
                else:
                    columns.append("NULL")
            rows = txn.fetchall(
                f"SELECT e.id, {', '.join(columns)}"
                " FROM email_fts f JOIN emails e ON e.account_id = f.account_id AND e.docid = f.docid"
                " WHERE f.account_id = ? AND f.document @@ to_tsquery('jmapd_search', ?)"
                f" AND e.id IN ({', '.join('?' * len(chunk))})",
                (*params, account_id, either, *chunk),
            )
            for email_id, subject, body in rows:
                if merge:
                    # A phrase is marked as a whole, as FTS5 marks it.
                    subject, body = (
                        None if text is None else re.sub(re.escape(closed) + r"(\s+)" + re.escape(opened), r"\1", text)
                        for text in (subject, body)
                    )
                found[email_id] = (
                    subject if subject_query and opened in (subject or "") else None,
                    _window(body, opened, closed) if body_query and body else None,
                )
        return found


#: The one index of the PostgreSQL engine (it keeps no state).
TEXT_INDEX = PostgreSQLTextIndex()
