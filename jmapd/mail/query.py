# -*- test-case-name: tests.mail.test_email_query -*-
"""
Email/query and Email/queryChanges (RFC 8621 sections 4.4 and 4.5, RFC
8620 sections 5.5 and 5.6).

This module reads what the client sent, the FilterOperator and
FilterCondition tree, the Comparators and the window arguments, checks
it, and hands a L{jmapd.storage.search.Query} to the storage, which runs it
as one SQL statement.  It decides the window: a page by position is read
with LIMIT and OFFSET (so a list view reads 50 rows, not the Mailbox), a
page by anchor or from the end needs the rows up to the anchor or the
count first.

The queryState of every Email query is the Email state.  Everything an
Email query looks at is a property of Emails (Mailboxes, keywords, dates,
sizes, the message) or of the other Emails of its Thread, and every
change of those is an Email change: a keyword set on one Email of a
Thread changes that Email; an Email leaving a Thread is destroyed.  So
the result can only change when the Email state does.

Email/queryChanges is exact where the changelog allows: it knows which
Emails changed since the old state, not how.  Each changed Email that
could have moved is reported removed and, if it is in the current
result, added at its index; an Email whose own rows did not change keeps
its place relative to the others, except when the query looks at other
Emails of its Thread (thread keyword conditions, collapseThreads), so
then every Email of a changed Thread counts as changed.  When the filter
and sort use only immutable properties, updates cannot move anything and
only created and destroyed Emails are reported (and C{upToId} is
honoured).  A state older than the compacted changelog gets
cannotCalculateChanges.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from jmapd.mail import MAIL
from jmapd.protocol.arguments import Arguments, is_id, is_unsigned_int
from jmapd.protocol.engine import Context, Registry
from jmapd.protocol.errors import MethodError, invalid_arguments
from jmapd.protocol.standard import (
    check_filter_and_sort,
    comparator_order,
    query_changes,
    query_changes_response,
)
from jmapd.storage import changelog, emails, search
from jmapd.storage.search import (
    Comparator,
    HasAttachment,
    HasKeyword,
    Header,
    InMailbox,
    InMailboxOtherThan,
    MaxSize,
    MinSize,
    Operator,
    Query,
    ReceivedAfter,
    ReceivedBefore,
    Term,
    Text,
    ThreadKeyword,
)

#: Nested filters deeper or larger than this are refused (unsupportedFilter):
#: each condition is a subquery, and the database limits expression depth.
MAX_FILTER_DEPTH = 16
MAX_FILTER_CONDITIONS = 256

#: The Email/query sort properties (the same list as the account's
#: emailQuerySortOptions).
SORT_PROPERTIES = (
    "receivedAt",
    "size",
    "from",
    "to",
    "subject",
    "sentAt",
    "hasKeyword",
    "allInThreadHaveKeyword",
    "someInThreadHaveKeyword",
)
_KEYWORD_SORTS = frozenset({"hasKeyword", "allInThreadHaveKeyword", "someInThreadHaveKeyword"})

#: Sorts and conditions on properties a client can change (an Email/set
#: update can move an Email in or out of, or within, the result).
_MUTABLE_SORTS = _KEYWORD_SORTS
_MUTABLE_CONDITIONS = (InMailbox, InMailboxOtherThan, HasKeyword, ThreadKeyword)


# -- reading filters ------------------------------------------------------------


def unsupported_filter(description: str) -> MethodError:
    return MethodError("unsupportedFilter", description)


def _keyword(value: Any, name: str) -> str:
    from jmapd.mail.email import is_keyword

    if not isinstance(value, str) or not is_keyword(value):
        raise invalid_arguments(f"filter: {name} must be a keyword, got {value!r}")
    return value.lower()


def _date(value: Any, name: str) -> int:
    ms = emails.parse_date_ms(value, utc_only=True)
    if ms is None:
        raise invalid_arguments(f"filter: {name} must be a UTCDate, got {value!r}")
    return ms


def _size(value: Any, name: str) -> int:
    if not is_unsigned_int(value):
        raise invalid_arguments(f"filter: {name} must be an UnsignedInt, got {value!r}")
    return int(value)


def _string(value: Any, name: str) -> str:
    if not isinstance(value, str):
        raise invalid_arguments(f"filter: {name} must be a String, got {value!r}")
    return value


def parse_text(text: str) -> tuple[Term, ...]:
    """
    The search terms of a String filter value (RFC 8621 section 4.4.1):
    white space separates words, all of which must be found; text in
    matched single or double quotes is a phrase, in which a backslash
    escapes the next character.  A quote only opens a phrase at the start
    of a word, so "don't" stays a word.  Terms without a letter or digit
    can match nothing the index holds and are dropped.  A NUL (JSON
    allows one in a String) separates words like white space: no text
    the index holds has one, and neither engine takes one in a query.
    """
    text = text.replace("\x00", " ")
    terms: list[Term] = []
    word: list[str] = []

    def flush() -> None:
        if word:
            terms.append(Term("".join(word)))
            word.clear()

    index = 0
    while index < len(text):
        char = text[index]
        if char in "\"'" and not word:
            phrase, end = _phrase(text, index)
            if end is not None:
                terms.append(Term(phrase, phrase=True))
                index = end + 1
                continue
        if char.isspace():
            flush()
        else:
            word.append(char)
        index += 1
    flush()
    return tuple(term for term in terms if any(c.isalnum() for c in term.text))


def _phrase(text: str, start: int) -> tuple[str, int | None]:
    quote = text[start]
    out: list[str] = []
    index = start + 1
    while index < len(text):
        char = text[index]
        if char == "\\" and index + 1 < len(text):
            out.append(text[index + 1])
            index += 2
            continue
        if char == quote:
            return "".join(out), index
        out.append(char)
        index += 1
    return "", None


def _condition(name: str, value: Any) -> Any:
    if name == "inMailbox":
        if not is_id(value):
            raise invalid_arguments(f"filter: inMailbox must be a Mailbox id, got {value!r}")
        return InMailbox(value)
    if name == "inMailboxOtherThan":
        if not isinstance(value, list) or not all(is_id(v) for v in value):
            raise invalid_arguments("filter: inMailboxOtherThan must be an array of Mailbox ids")
        return InMailboxOtherThan(tuple(sorted(set(value))))
    if name == "before":
        return ReceivedBefore(_date(value, name))
    if name == "after":
        return ReceivedAfter(_date(value, name))
    if name == "minSize":
        return MinSize(_size(value, name))
    if name == "maxSize":
        return MaxSize(_size(value, name))
    if name == "allInThreadHaveKeyword":
        return ThreadKeyword(_keyword(value, name), "all")
    if name == "someInThreadHaveKeyword":
        return ThreadKeyword(_keyword(value, name), "some")
    if name == "noneInThreadHaveKeyword":
        return ThreadKeyword(_keyword(value, name), "none")
    if name == "hasKeyword":
        return HasKeyword(_keyword(value, name))
    if name == "notKeyword":
        return HasKeyword(_keyword(value, name), present=False)
    if name == "hasAttachment":
        if not isinstance(value, bool):
            raise invalid_arguments(f"filter: hasAttachment must be a Boolean, got {value!r}")
        return HasAttachment(value)
    if name in search.TEXT_FIELDS:
        return Text(name, parse_text(_string(value, name)))
    if name == "header":
        if (
            not isinstance(value, list)
            or not 1 <= len(value) <= 2
            or not all(isinstance(v, str) for v in value)
            or not value[0]
        ):
            raise invalid_arguments("filter: header must be [name] or [name, value], Strings")
        return Header(value[0].lower(), value[1] if len(value) == 2 else None)
    raise unsupported_filter(f"Email/query has no filter condition {name!r}")


class _Budget:
    def __init__(self) -> None:
        self.conditions = 0


def parse_filter(value: Any) -> Any:
    """
    The filter tree of an Email/query C{filter} argument (C{None} for
    null: every Email).

    @raise MethodError: invalidArguments for values of the wrong type,
        unsupportedFilter for conditions or operators this server does
        not know, or a filter too large to run.
    """
    if value is None:
        return None
    return _node(value, 0, _Budget())


def _node(value: Any, depth: int, budget: _Budget) -> Any:
    if not isinstance(value, dict):
        raise invalid_arguments("filter: a FilterOperator or FilterCondition must be an object")
    if depth > MAX_FILTER_DEPTH:
        raise unsupported_filter(f"filters nested deeper than {MAX_FILTER_DEPTH} levels are not supported")
    budget.conditions += 1
    if budget.conditions > MAX_FILTER_CONDITIONS:
        raise unsupported_filter(f"filters of more than {MAX_FILTER_CONDITIONS} conditions are not supported")
    if "operator" in value:
        operator = value["operator"]
        conditions = value.get("conditions")
        unknown = sorted(set(value) - {"operator", "conditions"})
        if unknown:
            raise invalid_arguments(f"filter: a FilterOperator has no property {', '.join(unknown)}")
        if not isinstance(operator, str):
            raise invalid_arguments(f"filter: operator must be a String, got {operator!r}")
        if operator not in ("AND", "OR", "NOT"):
            raise unsupported_filter(f"filter: unknown operator {operator!r}; use AND, OR or NOT")
        if not isinstance(conditions, list):
            raise invalid_arguments("filter: a FilterOperator needs conditions, an array")
        return Operator(operator, tuple(_node(c, depth + 1, budget) for c in conditions))
    parts = tuple(_condition(name, item) for name, item in value.items())
    budget.conditions += max(len(parts) - 1, 0)
    if len(parts) == 1:
        return parts[0]
    return Operator("AND", parts)


def parse_sort(value: Any) -> tuple[Comparator, ...]:
    """
    The Comparators of an Email/query C{sort} argument.

    @raise MethodError: unsupportedSort for a property or collation this
        server does not sort by, invalidArguments for malformed ones.
    """
    comparators = []
    for item in check_filter_and_sort(None, value):
        name = item["property"]
        if name not in SORT_PROPERTIES:
            raise MethodError("unsupportedSort", f"Emails cannot be sorted by {name!r}")
        ascending, collation = comparator_order(item)
        keyword = None
        if name in _KEYWORD_SORTS:
            keyword = _keyword(item.get("keyword"), f"the {name} sort's keyword")
        comparators.append(Comparator(name, ascending, collation, keyword))
    return tuple(comparators)


def _walk(node: Any) -> Iterable[Any]:
    if node is None:
        return
    yield node
    if isinstance(node, Operator):
        for child in node.conditions:
            yield from _walk(child)


def is_immutable(query: Query) -> bool:
    """
    Whether only immutable properties decide the result (RFC 8620 section
    5.6: then upToId applies, and updates cannot move an Email).
    """
    if query.collapse_threads:
        return False
    if any(isinstance(node, _MUTABLE_CONDITIONS) for node in _walk(query.filter)):
        return False
    return not any(c.property in _MUTABLE_SORTS for c in query.sort)


def depends_on_thread(query: Query) -> bool:
    """
    Whether an Email's place in the result depends on the other Emails of
    its Thread.
    """
    return (
        query.collapse_threads
        or any(isinstance(node, ThreadKeyword) for node in _walk(query.filter))
        or any(c.property in ("allInThreadHaveKeyword", "someInThreadHaveKeyword") for c in query.sort)
    )


# -- the methods ----------------------------------------------------------------------


def _read_query(args: Arguments) -> Query:
    filter = parse_filter(args.any("filter"))
    sort = parse_sort(args.any("sort"))
    collapse = args.boolean("collapseThreads")
    return Query(filter, sort, collapse)


def visible(ctx: Context, account_id: str, query: Query) -> Query:
    """
    C{query} limited to the Emails the principal may read: in a shared
    account, those in at least one Mailbox with mayReadItems (the others
    stay invisible: not in ids, not in total).
    """
    from jmapd import sharing

    readable = sharing.readable(ctx, account_id)
    if readable is None:
        return query
    allowed = Operator("OR", tuple(InMailbox(m) for m in sorted(readable)))
    filter = allowed if query.filter is None else Operator("AND", (query.filter, allowed))
    return Query(filter, query.sort, query.collapse_threads)


def email_state(ctx: Context, account_id: str) -> str:
    return str(changelog.get_modseq(ctx.txn, account_id, emails.EMAIL))


def email_query(ctx: Context, arguments: dict[str, Any]) -> dict[str, Any]:
    """
    Email/query (RFC 8621 section 4.4).
    """
    args = Arguments(arguments, ctx.method)
    account_id = args.id("accountId")
    query = _read_query(args)
    position = args.int("position", 0)
    anchor = args.id("anchor", required=False, nullable=True)
    anchor_offset = args.int("anchorOffset", 0)
    limit = args.unsigned_int("limit")
    calculate_total = args.boolean("calculateTotal")
    args.done()
    ctx.account(account_id, MAIL)
    query = visible(ctx, account_id, query)
    txn = ctx.txn
    response: dict[str, Any] = {
        "accountId": account_id,
        "queryState": email_state(ctx, account_id),
        "canCalculateChanges": True,
    }
    max_results = ctx.config.query_max_results
    if limit is None or limit > max_results:
        limit = max_results
        response["limit"] = limit
    total: int | None = None
    if anchor is not None:
        seen: list[str] = []
        found: int | None = None
        for email_id in search.iter_ids(txn, account_id, query):
            seen.append(email_id)
            if found is None and email_id == anchor:
                found = len(seen) - 1
            if found is not None and len(seen) >= max(found + anchor_offset, 0) + limit:
                break
        if found is None:
            raise MethodError("anchorNotFound", f"the anchor {anchor!r} is not in the results")
        start = min(max(found + anchor_offset, 0), len(seen))
        ids = seen[start : start + limit]
    else:
        if position < 0:
            total = search.count(txn, account_id, query)
            start = max(total + position, 0)
        else:
            start = position
        ids = list(search.iter_ids(txn, account_id, query, offset=start, limit=limit))
        if not ids and start > 0:
            # Past the end: the position reported is the end of the results.
            if total is None:
                total = search.count(txn, account_id, query)
            start = min(start, total)
    response["position"] = start
    response["ids"] = ids
    if calculate_total:
        response["total"] = total if total is not None else search.count(txn, account_id, query)
    return response


def _since(txn: Any, account_id: str, type_name: str, since: int) -> changelog.Changes | None:
    if changelog.get_modseq(txn, account_id, type_name) <= since:
        return None
    return changelog.changes_since(txn, account_id, type_name, since, 1 << 62)


def email_query_changes(ctx: Context, arguments: dict[str, Any]) -> dict[str, Any]:
    """
    Email/queryChanges (RFC 8621 section 4.5); see the module docstring.
    """
    args = Arguments(arguments, ctx.method)
    account_id = args.id("accountId")
    query = _read_query(args)
    since_query_state = args.string("sinceQueryState", required=True, nullable=False)
    # An UnsignedInt: unlike /changes (RFC 8620 section 5.2), section 5.6
    # does not ask for a positive one; 0 means any change is too many.
    max_changes = args.unsigned_int("maxChanges")
    up_to_id = args.id("upToId", required=False, nullable=True)
    calculate_total = args.boolean("calculateTotal")
    args.done()
    ctx.account(account_id, MAIL)
    query = visible(ctx, account_id, query)
    txn = ctx.txn
    state = email_state(ctx, account_id)
    since = None
    if since_query_state.isascii() and since_query_state.isdigit() and len(since_query_state) <= 18:
        since = int(since_query_state)
    if since is None:
        raise MethodError("cannotCalculateChanges", f"{since_query_state!r} is not an Email query state")
    try:
        changes = changelog.changes_since(txn, account_id, emails.EMAIL, since, 1 << 62)
        immutable = is_immutable(query)
        touched = set(changes.created) | set(changes.destroyed)
        if not immutable:
            touched |= set(changes.updated)
        if depends_on_thread(query) and touched:
            existing = sorted(touched - set(changes.destroyed))
            threads = {row["thread_id"] for row in emails.get_rows(txn, account_id, existing, ["thread_id"])}
            thread_changes = _since(txn, account_id, emails.THREAD, since)
            if thread_changes is not None:
                threads.update(thread_changes.created + thread_changes.updated)
            for members in emails.thread_email_ids(txn, account_id, sorted(threads)).values():
                touched.update(members)
    except changelog.CannotCalculateChanges as e:
        raise MethodError("cannotCalculateChanges", str(e)) from None
    shared = account_id != ctx.principal.account_id
    if shared:
        from jmapd import sharing

        moved = sharing.hide_removed(ctx, account_id, emails.EMAIL, since, int(state), touched)
    if touched:
        ids: Iterable[str] = list(search.iter_ids(txn, account_id, query))
    else:
        ids = ()
    removed, added = query_changes(ids, touched, set(changes.created), up_to_id if immutable else None)
    if shared:
        # Of someone else's account: only Emails the user can read, or
        # could since the old state (never one they could not).
        from jmapd.mail.email import EMAIL_TYPE

        seen = moved | EMAIL_TYPE.visible_ids(ctx, account_id, removed)
        removed = [i for i in removed if i in seen]
    response = query_changes_response(
        account_id, since_query_state, state, [], removed, added, max_changes, calculate_total=False
    )
    if calculate_total:
        response["total"] = search.count(txn, account_id, query)
    return response


def register(registry: Registry) -> None:
    """
    Add Email/query and Email/queryChanges.
    """
    registry.add_method("Email/query", MAIL, email_query)
    registry.add_method("Email/queryChanges", MAIL, email_query_changes)
