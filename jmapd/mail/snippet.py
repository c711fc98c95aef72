# -*- test-case-name: tests.mail.test_snippet -*-
"""
SearchSnippet/get (RFC 8621 section 5): where the text of an Email/query
filter matched, for a client to show and highlight.

The terms come from the filter's C{text}, C{subject} and C{body}
conditions (those under a NOT are what the Emails do I{not} contain, so
they are not highlighted).  The full-text index finds the matches, so a
snippet marks exactly the words the search matched (accents and case
folded, prefixes included); the marked text is then HTML-escaped, the
marks become C{<mark>} tags, and the preview is cut to 255 octets.
"""

from __future__ import annotations

import html
from collections.abc import Iterable
from typing import Any

from jmapd import sharing
from jmapd.mail import MAIL
from jmapd.mail.query import parse_filter
from jmapd.protocol.arguments import Arguments
from jmapd.protocol.engine import Context, Registry
from jmapd.protocol.errors import MethodError, invalid_arguments
from jmapd.storage import emails, search
from jmapd.storage.search import Operator, Term, Text

#: RFC 8621 section 5: the preview is at most 255 octets.
MAX_PREVIEW_OCTETS = 255

# The marks the index puts around matches: private-use code points, which
# mail text has no reason to carry (one that does only moves a highlight).
_OPEN = "\ue0f0"
_CLOSE = "\ue0f1"


def snippet_terms(node: Any, negated: bool = False) -> tuple[list[Term], list[Term]]:
    """
    The terms to highlight in subjects and in bodies.
    """
    subject: list[Term] = []
    body: list[Term] = []
    if isinstance(node, Operator):
        for child in node.conditions:
            more_subject, more_body = snippet_terms(child, negated or node.operator == "NOT")
            subject.extend(more_subject)
            body.extend(more_body)
    elif isinstance(node, Text) and not negated:
        if node.field in ("text", "subject"):
            subject.extend(node.terms)
        if node.field in ("text", "body"):
            body.extend(node.terms)
    return subject, body


def _pieces(marked: str) -> Iterable[tuple[str, bool]]:
    """
    (text, is it a match) pieces of a string with marks.
    """
    inside = False
    start = 0
    for index, char in enumerate(marked):
        if char in (_OPEN, _CLOSE):
            if index > start:
                yield marked[start:index], inside
            inside = char == _OPEN
            start = index + 1
    if start < len(marked):
        yield marked[start:], inside


def render(marked: str, max_octets: int | None = None) -> str:
    """
    HTML for text with marks: escaped, matches in C{<mark>}, at most
    C{max_octets} octets of UTF-8 (cut between characters, never inside
    an entity or a tag).
    """
    out: list[str] = []
    used = 0
    for text, is_match in _pieces(marked):
        wrap = ("<mark>", "</mark>") if is_match else ("", "")
        whole = wrap[0] + html.escape(text, quote=False) + wrap[1]
        size = len(whole.encode("utf-8"))
        if max_octets is None or used + size <= max_octets:
            out.append(whole)
            used += size
            continue
        room = max_octets - used - len(wrap[0]) - len(wrap[1])
        kept: list[str] = []
        for char in text:
            escaped = html.escape(char, quote=False)
            cost = len(escaped.encode("utf-8"))
            if cost > room:
                break
            kept.append(escaped)
            room -= cost
        if kept:
            out.append(wrap[0] + "".join(kept) + wrap[1])
        break
    return "".join(out)


def search_snippet_get(ctx: Context, arguments: dict[str, Any]) -> dict[str, Any]:
    """
    SearchSnippet/get (RFC 8621 section 5.1).
    """
    args = Arguments(arguments, ctx.method)
    account_id = args.id("accountId")
    filter_value = args.any("filter")
    email_ids = args.id_list("emailIds", required=True, nullable=False, allow_creation_refs=False)
    args.done()
    ctx.account(account_id, MAIL)
    if filter_value is not None and not isinstance(filter_value, dict):
        raise invalid_arguments("'filter' must be a FilterOperator or FilterCondition object")
    node = parse_filter(filter_value)
    limit = ctx.config.max_objects_in_get
    if len(email_ids) > limit:
        raise MethodError("requestTooLarge", f"{len(email_ids)} emailIds; maxObjectsInGet is {limit}")
    wanted = list(dict.fromkeys(email_ids))
    existing = {row["id"] for row in emails.get_rows(ctx.txn, account_id, wanted, ["id"])}
    readable = sharing.readable(ctx, account_id)
    if readable is not None:
        # In a shared account, Emails the principal may not read do not
        # exist for it.
        mailboxes_of = emails.get_mailbox_ids(ctx.txn, account_id, sorted(existing))
        existing = {e for e in existing if readable.intersection(mailboxes_of.get(e, {}))}
    subject_terms, body_terms = snippet_terms(node)
    found = search.highlight(ctx.txn, account_id, sorted(existing), subject_terms, body_terms, (_OPEN, _CLOSE))
    listed = []
    not_found = []
    for email_id in wanted:
        if email_id not in existing:
            not_found.append(email_id)
            continue
        subject, preview = found.get(email_id, (None, None))
        listed.append(
            {
                "emailId": email_id,
                "subject": None if subject is None else render(subject),
                "preview": None if preview is None else render(" ".join(preview.split()), MAX_PREVIEW_OCTETS),
            }
        )
    return {"accountId": account_id, "list": listed, "notFound": not_found or None}


def register(registry: Registry) -> None:
    """
    Add SearchSnippet/get.
    """
    registry.add_method("SearchSnippet/get", MAIL, search_snippet_get)
