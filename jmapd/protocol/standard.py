# -*- test-case-name: tests.protocol.test_standard -*-
"""
The standard methods of RFC 8620 section 5 (/get, /changes, /set, /copy,
/query, /queryChanges), written once.

A data type subclasses L{DataType}, declares its properties and implements
the storage hooks (C{fetch}, C{create}, C{update}, C{destroy}, C{query}, ...);
L{register_standard_methods} then adds C{Foo/get}, C{Foo/set}, ... to a
registry.  Argument checking, ifInState, limits, patches, creation-id
references, SetError bookkeeping and state strings live here, so every type
behaves the same.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from typing import Any, ClassVar, TypeVar

from attrs import frozen

from jmapd.protocol.arguments import Arguments, is_id
from jmapd.protocol.core import COLLATIONS
from jmapd.protocol.engine import Context, Registry, ResponseList
from jmapd.protocol.errors import (
    MethodError,
    SetErrorException,
    invalid_arguments,
    invalid_properties,
    set_error,
)
from jmapd.protocol.patch import apply_patch
from jmapd.storage import changelog

_T = TypeVar("_T")

# A state is a modseq in ASCII digits (str.isdigit also accepts "²", which
# int() then rejects).
_STATE = re.compile(r"[0-9]{1,18}")


class DataType:
    """
    One JMAP data type.  Subclasses set the class attributes and override
    the hooks they support; a method whose hook is missing is simply not
    registered.
    """

    name: ClassVar[str]
    capability: ClassVar[str]
    #: Every property, "id" first; /get returns these when properties is null.
    properties: ClassVar[tuple[str, ...]]
    #: Properties only the server sets (a client may repeat the current value).
    server_set: ClassVar[frozenset[str]] = frozenset({"id"})
    #: Properties a client may give at creation but never change.
    immutable: ClassVar[frozenset[str]] = frozenset()
    #: Whether /get with ids null returns every object.
    get_all: ClassVar[bool] = True
    #: The methods to register (a subset of get, changes, set, copy, query, queryChanges).
    methods: ClassVar[tuple[str, ...]] = ("get", "changes", "set")

    # -- states ----------------------------------------------------------

    def state(self, ctx: Context, account_id: str) -> str:
        return str(changelog.get_modseq(ctx.txn, account_id, self.name))

    def parse_state(self, state: Any) -> int | None:
        if isinstance(state, str) and _STATE.fullmatch(state):
            return int(state)
        return None

    # -- hooks -----------------------------------------------------------

    def fetch(
        self, ctx: Context, account_id: str, ids: list[str] | None, properties: frozenset[str], extra: dict[str, Any]
    ) -> list[dict[str, Any]]:
        """
        The objects with these ids that exist (all of them for C{ids=None}),
        each with at least C{id} and C{properties}.
        """
        raise NotImplementedError

    def count(self, ctx: Context, account_id: str) -> int:
        """
        How many objects the account has (for /get with ids null).
        """
        return len(self.fetch(ctx, account_id, None, frozenset({"id"}), {}))

    def get_arguments(self, args: Arguments) -> dict[str, Any]:
        """
        Read type-specific /get arguments.
        """
        return {}

    def set_arguments(self, args: Arguments) -> dict[str, Any]:
        """
        Read type-specific /set arguments.
        """
        return {}

    def create(self, ctx: Context, account_id: str, obj: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
        """
        Create an object from the client's properties (checked for unknown
        and server-set names already).

        @return: the properties the client did not send (at least C{id}).
        @raise SetErrorException: to reject it.
        """
        raise set_error("forbidden", f"{self.name} objects cannot be created")

    def update(
        self,
        ctx: Context,
        account_id: str,
        object_id: str,
        current: dict[str, Any],
        new: dict[str, Any],
        touched: set[str],
        extra: dict[str, Any],
    ) -> dict[str, Any] | None:
        """
        Store C{new}, the object after the patch.

        @return: properties that changed in a way the patch did not ask for,
            or C{None}.
        """
        raise set_error("forbidden", f"{self.name} objects cannot be updated")

    def destroy(self, ctx: Context, account_id: str, object_id: str, extra: dict[str, Any]) -> None:
        raise set_error("forbidden", f"{self.name} objects cannot be destroyed")

    def changes_extra(self, ctx: Context, changes: changelog.Changes) -> dict[str, Any]:
        """
        Extra /changes response arguments (Mailbox's updatedProperties).
        """
        return {}

    def after_set(self, ctx: Context, account_id: str, extra: dict[str, Any]) -> None:
        """
        Called once after all creates, updates and destroys of a /set
        (for checks of the final state).
        """

    # -- the standard methods --------------------------------------------

    def check_state(self, ctx: Context, account_id: str, if_in_state: Any) -> str:
        current = self.state(ctx, account_id)
        if if_in_state is not None and if_in_state != current:
            raise MethodError("stateMismatch", f"the {self.name} state is {current!r}, not {if_in_state!r}")
        return current

    def do_get(self, ctx: Context, arguments: dict[str, Any]) -> dict[str, Any]:
        args = Arguments(arguments, ctx.method)
        account_id = args.id("accountId")
        ids = args.id_list("ids")
        properties = args.string_list("properties")
        extra = self.get_arguments(args)
        args.done()
        ctx.account(account_id, self.capability)
        limit = ctx.config.max_objects_in_get
        if ids is not None and len(ids) > limit:
            raise MethodError(
                "requestTooLarge", f"{len(ids)} ids requested; maxObjectsInGet is {limit}"
            )
        if properties is None:
            wanted = frozenset(self.properties)
        else:
            unknown = [p for p in properties if not self.is_property(p)]
            if unknown:
                raise invalid_arguments(f"unknown {self.name} properties: {', '.join(unknown)}")
            wanted = frozenset(properties) | {"id"}
        state = self.state(ctx, account_id)
        not_found: list[str] = []
        if ids is None:
            if not self.get_all:
                raise invalid_arguments(f"{self.name}/get needs 'ids'")
            if self.count(ctx, account_id) > limit:
                raise MethodError(
                    "requestTooLarge", f"the account has more {self.name} objects than maxObjectsInGet ({limit})"
                )
            found = self.fetch(ctx, account_id, None, wanted, extra)
        else:
            resolved: list[str] = []
            seen: set[str] = set()
            for given in ids:
                real = ctx.resolve_id(given)
                if real is None:
                    if given not in not_found:
                        not_found.append(given)
                elif real not in seen:
                    seen.add(real)
                    resolved.append(real)
            by_id = {obj["id"]: obj for obj in self.fetch(ctx, account_id, resolved, wanted, extra)}
            found = []
            for object_id in resolved:
                if object_id in by_id:
                    found.append(by_id[object_id])
                else:
                    not_found.append(object_id)
        listed = [{key: value for key, value in obj.items() if key in wanted} for obj in found]
        return {"accountId": account_id, "state": state, "list": listed, "notFound": not_found}

    def is_property(self, name: str) -> bool:
        return name in self.properties

    def do_changes(self, ctx: Context, arguments: dict[str, Any]) -> dict[str, Any]:
        args = Arguments(arguments, ctx.method)
        account_id = args.id("accountId")
        since_state = args.string("sinceState", required=True, nullable=False)
        max_changes = args.unsigned_int("maxChanges", positive=True)
        args.done()
        ctx.account(account_id, self.capability)
        limit = ctx.config.changes_max_results
        max_changes = limit if max_changes is None else min(max_changes, limit)
        since = self.parse_state(since_state)
        if since is None:
            raise MethodError("cannotCalculateChanges", f"{since_state!r} is not a {self.name} state")
        try:
            changes = changelog.changes_since(ctx.txn, account_id, self.name, since, max_changes)
        except changelog.CannotCalculateChanges as e:
            raise MethodError("cannotCalculateChanges", str(e)) from None
        response = {
            "accountId": account_id,
            "oldState": since_state,
            "newState": str(changes.new_modseq),
            "hasMoreChanges": changes.has_more,
            "created": changes.created,
            "updated": changes.updated,
            "destroyed": changes.destroyed,
        }
        response.update(self.changes_extra(ctx, changes))
        return response

    def check_create(self, obj: Any) -> dict[str, Any]:
        if not isinstance(obj, dict):
            raise invalid_properties(f"a {self.name} to create must be an object")
        self._check_properties(
            [key for key in obj if not self.is_property(key)],
            [key for key in obj if key in self.server_set],
            "set by the server",
        )
        return obj

    def _check_properties(self, unknown: list[str], fixed: list[str], why: str) -> None:
        """
        Refuse a create, update or copy that names C{unknown} properties
        or sets C{fixed} ones the client may not (C{why}), with one
        invalidProperties naming all of them: RFC 8620 section 5.3 says
        its C{properties} SHOULD list every invalid property, not the
        first kind found.
        """
        if not unknown and not fixed:
            return
        problems = []
        if unknown:
            problems.append(f"unknown {self.name} properties: {', '.join(unknown)}")
        if fixed:
            problems.append(f"properties {why}: {', '.join(fixed)}")
        raise invalid_properties("; ".join(problems), *unknown, *fixed)

    def do_set(self, ctx: Context, arguments: dict[str, Any]) -> dict[str, Any]:
        args = Arguments(arguments, ctx.method)
        account_id = args.id("accountId")
        if_in_state = args.string("ifInState")
        create = args.object("create", expected="a map of creation ids to objects")
        update = args.object("update", values=lambda v: isinstance(v, dict), expected="a map of ids to PatchObjects")
        destroy = args.id_list("destroy")
        extra = self.set_arguments(args)
        args.done()
        return self.run_set(ctx, account_id, if_in_state, create, update, destroy, extra)

    def run_set(
        self,
        ctx: Context,
        account_id: str,
        if_in_state: Any,
        create: dict[str, Any] | None,
        update: dict[str, Any] | None,
        destroy: list[str] | None,
        extra: dict[str, Any],
    ) -> dict[str, Any]:
        ctx.account(account_id, self.capability, write=True)
        for name, mapping in (("create", create), ("update", update)):
            if mapping is not None and not all(isinstance(k, str) and k for k in mapping):
                raise invalid_arguments(f"{ctx.method}: '{name}' keys must be non-empty strings")
        total = len(create or ()) + len(update or ()) + len(destroy or ())
        limit = ctx.config.max_objects_in_set
        if total > limit:
            raise MethodError("requestTooLarge", f"{total} objects in one /set; maxObjectsInSet is {limit}")
        old_state = self.check_state(ctx, account_id, if_in_state)
        created: dict[str, Any] = {}
        not_created: dict[str, Any] = {}
        updated: dict[str, Any] = {}
        not_updated: dict[str, Any] = {}
        destroyed: list[str] = []
        not_destroyed: dict[str, Any] = {}
        for creation_id, obj in (create or {}).items():
            try:
                with ctx.txn.savepoint():
                    result = self.create(ctx, account_id, self.check_create(obj), extra)
            except SetErrorException as e:
                not_created[creation_id] = e.error.to_json()
            else:
                created[creation_id] = result
                ctx.created_ids[creation_id] = result["id"]
        # After the creates, so that "#cid" in destroy names what was just created.
        destroying = {ctx.resolve_id(i) for i in destroy or ()}
        for given_id, patch in (update or {}).items():
            object_id = ctx.resolve_id(given_id)
            try:
                if object_id is None or not is_id(object_id):
                    raise set_error("notFound", f"no {self.name} {given_id!r}")
                if object_id in destroying:
                    raise set_error("willDestroy", f"{object_id} is destroyed by this call")
                with ctx.txn.savepoint():
                    updated[object_id] = self._update_one(ctx, account_id, object_id, patch, extra)
            except SetErrorException as e:
                not_updated[given_id if object_id is None else object_id] = e.error.to_json()
        for given_id in destroy or ():
            object_id = ctx.resolve_id(given_id)
            if object_id is not None and (object_id in destroyed or object_id in not_destroyed):
                # The same id twice (or as an id and a "#cid"): one outcome.
                continue
            try:
                if object_id is None:
                    raise set_error("notFound", f"no {self.name} {given_id!r}")
                if not self.fetch(ctx, account_id, [object_id], frozenset({"id"}), extra):
                    raise set_error("notFound", f"no {self.name} {object_id!r}")
                with ctx.txn.savepoint():
                    self.destroy(ctx, account_id, object_id, extra)
            except SetErrorException as e:
                not_destroyed[given_id if object_id is None else object_id] = e.error.to_json()
            else:
                destroyed.append(object_id)
        self.after_set(ctx, account_id, extra)
        return {
            "accountId": account_id,
            "oldState": old_state,
            "newState": self.state(ctx, account_id),
            "created": created or None,
            "updated": updated or None,
            "destroyed": destroyed or None,
            "notCreated": not_created or None,
            "notUpdated": not_updated or None,
            "notDestroyed": not_destroyed or None,
        }

    def _update_one(
        self, ctx: Context, account_id: str, object_id: str, patch: dict[str, Any], extra: dict[str, Any]
    ) -> dict[str, Any] | None:
        found = self.fetch(ctx, account_id, [object_id], frozenset(self.properties), extra)
        if not found:
            raise set_error("notFound", f"no {self.name} {object_id!r}")
        current = found[0]
        new, touched = apply_patch(current, patch)
        self._check_properties(
            sorted(p for p in touched if not self.is_property(p)),
            sorted(
                p
                for p in touched
                if (p in self.server_set or p in self.immutable) and new.get(p) != current.get(p)
            ),
            "that cannot be changed",
        )
        return self.update(ctx, account_id, object_id, current, new, touched, extra)

    # -- /query and /queryChanges ---------------------------------------

    def query(
        self, ctx: Context, account_id: str, filter: Any, sort: list[dict[str, Any]], extra: dict[str, Any]
    ) -> list[str]:
        """
        The ids matching C{filter} in C{sort} order.
        """
        raise NotImplementedError

    def query_arguments(self, args: Arguments) -> dict[str, Any]:
        return {}

    def query_state(self, ctx: Context, account_id: str) -> str:
        return self.state(ctx, account_id)

    def do_query(self, ctx: Context, arguments: dict[str, Any]) -> dict[str, Any]:
        args = Arguments(arguments, ctx.method)
        account_id = args.id("accountId")
        filter = args.any("filter")
        sort = args.any("sort")
        position = args.int("position", 0)
        anchor = args.id("anchor", required=False, nullable=True)
        anchor_offset = args.int("anchorOffset", 0)
        limit = args.unsigned_int("limit")
        calculate_total = args.boolean("calculateTotal")
        extra = self.query_arguments(args)
        args.done()
        ctx.account(account_id, self.capability)
        sort = check_filter_and_sort(filter, sort)
        ids = self.query(ctx, account_id, filter, sort, extra)
        response = window(ids, position, anchor, anchor_offset, limit, ctx.config.query_max_results)
        response.update(
            {
                "accountId": account_id,
                "queryState": self.query_state(ctx, account_id),
                "canCalculateChanges": "queryChanges" in self.methods,
            }
        )
        if calculate_total:
            response["total"] = len(ids)
        return response

    def do_query_changes(self, ctx: Context, arguments: dict[str, Any]) -> dict[str, Any]:
        """
        /queryChanges from the changelog: every object changed since the
        old state is reported removed and, where it is in the current
        result, added at its index (RFC 8620 section 5.6 allows removed
        ids the client never had).
        """
        args = Arguments(arguments, ctx.method)
        request = read_query_changes_arguments(args)
        extra = self.query_arguments(args)
        args.done()
        account_id = request.account_id
        ctx.account(account_id, self.capability)
        sort = check_filter_and_sort(request.filter, request.sort)
        since = self.parse_state(request.since_query_state)
        if since is None:
            raise MethodError("cannotCalculateChanges", f"{request.since_query_state!r} is not a query state")
        try:
            changes = changelog.changes_since(ctx.txn, account_id, self.name, since, 1 << 62)
        except changelog.CannotCalculateChanges as e:
            raise MethodError("cannotCalculateChanges", str(e)) from None
        ids = self.query(ctx, account_id, request.filter, sort, extra)
        touched = set(changes.updated) | set(changes.destroyed) | set(changes.created)
        # upToId is ignored: it may only cut the changes short when the
        # filter and sort use immutable properties (RFC 8620 section 5.6),
        # which this generic code cannot know; reporting them all is right.
        removed, added = query_changes(ids, touched, set(changes.created), None)
        return query_changes_response(
            account_id, request.since_query_state, self.query_state(ctx, account_id), ids, removed, added,
            request.max_changes, request.calculate_total,
        )

    # -- /copy -----------------------------------------------------------

    def copy(
        self, ctx: Context, from_account_id: str, account_id: str, source: dict[str, Any], overrides: dict[str, Any]
    ) -> dict[str, Any]:
        """
        Create in C{account_id} a copy of C{source} (read from the other
        account) with C{overrides} applied; return the server-set properties.
        """
        raise set_error("forbidden", f"{self.name} objects cannot be copied")

    def do_copy(self, ctx: Context, arguments: dict[str, Any]) -> Any:
        args = Arguments(arguments, ctx.method)
        from_account_id = args.id("fromAccountId")
        if_from_in_state = args.string("ifFromInState")
        account_id = args.id("accountId")
        if_in_state = args.string("ifInState")
        create = args.object("create", nullable=False, values=lambda v: isinstance(v, dict),
                             expected="a map of creation ids to objects")
        destroy_original = args.boolean("onSuccessDestroyOriginal")
        destroy_if_in_state = args.string("destroyFromIfInState")
        args.done()
        if create is None:
            raise invalid_arguments(f"{ctx.method}: 'create' is required")
        if from_account_id == account_id:
            raise invalid_arguments("fromAccountId and accountId must differ")
        ctx.from_account(from_account_id, self.capability, write=destroy_original)
        ctx.account(account_id, self.capability, write=True)
        self.check_state(ctx, from_account_id, if_from_in_state)
        old_state = self.check_state(ctx, account_id, if_in_state)
        limit = ctx.config.max_objects_in_set
        if len(create) > limit:
            raise MethodError("requestTooLarge", f"{len(create)} objects in one /copy; maxObjectsInSet is {limit}")
        created: dict[str, Any] = {}
        not_created: dict[str, Any] = {}
        originals: list[str] = []
        for creation_id, obj in create.items():
            try:
                source_id = obj.get("id")
                source_id = ctx.resolve_id(source_id) if isinstance(source_id, str) else None
                if source_id is None:
                    raise set_error("notFound", "the object to copy needs the 'id' of the original")
                overrides = {k: v for k, v in obj.items() if k != "id"}
                self._check_properties(
                    [k for k in overrides if not self.is_property(k)],
                    [k for k in overrides if k in self.server_set],
                    "set by the server",
                )
                found = self.fetch(ctx, from_account_id, [source_id], frozenset(self.properties), {})
                if not found:
                    raise set_error("notFound", f"no {self.name} {source_id!r} in {from_account_id}")
                with ctx.txn.savepoint():
                    result = self.copy(ctx, from_account_id, account_id, found[0], overrides)
            except SetErrorException as e:
                not_created[creation_id] = e.error.to_json()
            else:
                created[creation_id] = result
                ctx.created_ids[creation_id] = result["id"]
                originals.append(source_id)
        response = {
            "fromAccountId": from_account_id,
            "accountId": account_id,
            "oldState": old_state,
            "newState": self.state(ctx, account_id),
            "created": created or None,
            "notCreated": not_created or None,
        }
        if not destroy_original:
            return response
        responses = ResponseList([(ctx.method, response)])
        set_name = f"{self.name}/set"
        try:
            with ctx.txn.savepoint():
                destroyed = self.run_set(
                    ctx, from_account_id, destroy_if_in_state, None, None, originals, {}
                )
        except MethodError as e:
            responses.append(("error", e.arguments()))
        else:
            responses.append((set_name, destroyed))
        return responses


def check_filter_and_sort(filter: Any, sort: Any) -> list[dict[str, Any]]:
    """
    The common shape of /query and /queryChanges C{filter} and C{sort}
    (the data type checks what the conditions and properties mean).

    @return: C{sort}, C{[]} for null.
    """
    if filter is not None and not isinstance(filter, dict):
        raise invalid_arguments("'filter' must be a FilterOperator or FilterCondition object")
    if sort is None:
        return []
    if not isinstance(sort, list) or not all(
        isinstance(s, dict) and isinstance(s.get("property"), str) for s in sort
    ):
        raise invalid_arguments("'sort' must be an array of Comparator objects with a 'property'")
    return sort


@frozen
class QueryChangesArguments:
    """
    The arguments every /queryChanges takes (RFC 8620 section 5.6).
    C{upToId} is checked but not kept: it may only cut the changes short
    for a query on immutable properties, which the data types that use
    this do not have.
    """

    account_id: str
    filter: Any
    sort: Any
    since_query_state: str
    max_changes: int | None
    calculate_total: bool


def read_query_changes_arguments(args: Arguments) -> QueryChangesArguments:
    """
    Read the /queryChanges arguments from C{args} (the caller reads its
    own extra ones, then calls C{args.done()}).
    """
    account_id = args.id("accountId")
    filter = args.any("filter")
    sort = args.any("sort")
    since_query_state = args.string("sinceQueryState", required=True, nullable=False)
    # An UnsignedInt, 0 included (unlike /changes, RFC 8620 section 5.2).
    max_changes = args.unsigned_int("maxChanges")
    args.id("upToId", required=False, nullable=True)
    calculate_total = args.boolean("calculateTotal")
    return QueryChangesArguments(account_id, filter, sort, since_query_state, max_changes, calculate_total)


def comparator_order(comparator: dict[str, Any]) -> tuple[bool, str]:
    """
    The C{isAscending} and C{collation} of a Comparator (RFC 8620 section
    5.5), checked: a Boolean and a String, and a collation this server
    knows, which is C{unsupportedSort} otherwise even where the property
    sorted by is not text.

    @raise MethodError: invalidArguments or unsupportedSort.
    """
    ascending = comparator.get("isAscending", True)
    collation = comparator.get("collation", "i;unicode-casemap")
    if not isinstance(ascending, bool) or not isinstance(collation, str):
        raise invalid_arguments("sort: isAscending must be a Boolean and collation a String")
    if collation not in COLLATIONS:
        raise MethodError("unsupportedSort", f"unknown collation {collation!r}")
    return ascending, collation


def filter_predicate(
    value: Any, condition: Callable[[dict[str, Any]], Callable[[_T], bool]], depth: int = 0
) -> Callable[[_T], bool]:
    """
    A /query C{filter} (RFC 8620 section 5.5: a FilterOperator of AND, OR
    or NOT over filters, or a FilterCondition) as a predicate, for data
    types filtered in Python; C{condition} makes the predicate of one
    FilterCondition (and checks it).  Null matches everything.

    @raise MethodError: invalidArguments for a malformed filter,
        unsupportedFilter for an unknown operator or one nested deeper than
        16 levels (and whatever C{condition} raises).
    """
    if value is None:
        return lambda item: True
    if not isinstance(value, dict):
        raise invalid_arguments("filter: a FilterOperator or FilterCondition must be an object")
    if depth > 16:
        raise MethodError("unsupportedFilter", "filters nested deeper than 16 levels are not supported")
    if "operator" not in value:
        return condition(value)
    operator = value["operator"]
    conditions = value.get("conditions")
    if not isinstance(operator, str) or not isinstance(conditions, list):
        raise invalid_arguments("filter: a FilterOperator needs an operator and conditions")
    if set(value) - {"operator", "conditions"}:
        raise invalid_arguments("filter: a FilterOperator has only operator and conditions")
    children = [filter_predicate(c, condition, depth + 1) for c in conditions]
    if operator == "AND":
        return lambda item: all(test(item) for test in children)
    if operator == "OR":
        return lambda item: any(test(item) for test in children)
    if operator == "NOT":
        return lambda item: not any(test(item) for test in children)
    raise MethodError("unsupportedFilter", f"filter: unknown operator {operator!r}; use AND, OR or NOT")


def query_changes(
    ids: Iterable[str], touched: set[str], created: set[str], up_to_id: str | None
) -> tuple[list[str], list[dict[str, Any]]]:
    """
    The removed and added lists of a /queryChanges (RFC 8620 section 5.6)
    from the current result C{ids} and the objects that C{touched} since
    the old state (C{created} ones among them were not in the old result).

    Splicing every touched id out of the old result leaves the untouched
    ones in their old order, which is their order now; splicing the
    touched ones of the current result back in at their indexes, lowest
    first, gives the current result.  With C{up_to_id} (only for
    immutable queries) nothing after it is added.
    """
    removed = sorted(touched - created)
    added = []
    for index, object_id in enumerate(ids):
        if object_id in touched:
            added.append({"id": object_id, "index": index})
        if up_to_id is not None and object_id == up_to_id:
            break
    return removed, added


def query_changes_response(
    account_id: str,
    old_query_state: str,
    new_query_state: str,
    ids: list[str],
    removed: list[str],
    added: list[dict[str, Any]],
    max_changes: int | None,
    calculate_total: bool,
) -> dict[str, Any]:
    """
    The /queryChanges response, or C{tooManyChanges} when the changes
    exceed the client's C{maxChanges}.
    """
    if max_changes is not None and len(removed) + len(added) > max_changes:
        raise MethodError("tooManyChanges", f"{len(removed) + len(added)} changes; maxChanges is {max_changes}")
    response: dict[str, Any] = {
        "accountId": account_id,
        "oldQueryState": old_query_state,
        "newQueryState": new_query_state,
        "removed": removed,
        "added": added,
    }
    if calculate_total:
        response["total"] = len(ids)
    return response


def window(
    ids: list[str], position: int, anchor: str | None, anchor_offset: int, limit: int | None, max_results: int
) -> dict[str, Any]:
    """
    The part of a query result the client asked for (RFC 8620 section 5.5):
    by C{position} (negative counts from the end) or by C{anchor} and
    C{anchorOffset}, at most C{limit} (capped at C{query-max-results}).
    A null limit is capped too, and the limit used is returned whenever it
    is not the one asked for, as RFC 8620 section 5.5 says.
    """
    response: dict[str, Any] = {}
    if limit is None or limit > max_results:
        response["limit"] = limit = max_results
    if anchor is not None:
        try:
            anchor_index = ids.index(anchor)
        except ValueError:
            raise MethodError("anchorNotFound", f"the anchor {anchor!r} is not in the results") from None
        start = max(anchor_index + anchor_offset, 0)
    else:
        start = position if position >= 0 else max(len(ids) + position, 0)
    start = min(start, len(ids))
    response["position"] = start
    response["ids"] = ids[start : start + limit]
    return response


def register_standard_methods(registry: Registry, data_type: DataType) -> None:
    """
    Add the data type's standard methods to the registry.
    """
    handlers = {
        "get": (data_type.do_get, False),
        "changes": (data_type.do_changes, False),
        "set": (data_type.do_set, True),
        "copy": (data_type.do_copy, True),
        "query": (data_type.do_query, False),
        "queryChanges": (data_type.do_query_changes, False),
    }
    for method in data_type.methods:
        handler, write = handlers[method]
        registry.add_method(f"{data_type.name}/{method}", data_type.capability, handler, write=write)


def ids_of(objects: Iterable[dict[str, Any]]) -> list[str]:
    return [obj["id"] for obj in objects]
