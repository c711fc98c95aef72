# -*- test-case-name: tests.mail.test_sharing -*-
"""
The Principal data type (RFC 9670 section 2): Principal/get, /changes,
/set, /query and /queryChanges, and the two Principals capabilities.

The Principals are one directory for the whole server, the same from
every account the user may use, so every such account has the Principals
capability and its C{accountIdForPrincipal} is the account itself.  The
state is the directory's own counter (L{jmapd.storage.principals}) with
a digest of the accounts the user may use (see L{PrincipalType.state}).
"""

from __future__ import annotations

import functools
import hashlib
import zoneinfo
from collections.abc import Callable
from typing import Any

from twisted.logger import Logger

from jmapd.protocol.arguments import Arguments
from jmapd.protocol.engine import Capability, Context, Principal, Registry
from jmapd.protocol.errors import MethodError, invalid_arguments, invalid_properties, set_error
from jmapd.protocol.standard import (
    DataType,
    check_filter_and_sort,
    comparator_order,
    query_changes,
    query_changes_response,
    read_query_changes_arguments,
    register_standard_methods,
    window,
)
from jmapd.sharing import OWNER, PRINCIPALS
from jmapd.storage import principals as storage
from jmapd.storage.principals import PrincipalRecord
from jmapd.storage.search import ascii_casemap, ascii_numeric, unicode_casemap

log = Logger()

_CONDITIONS = frozenset({"accountIds", "email", "name", "text", "type", "timeZone"})

#: The sort key of each collation of the Core capability.
_COLLATION_KEYS: dict[str, Callable[[str], Any]] = {
    "i;unicode-casemap": unicode_casemap,
    "i;ascii-casemap": ascii_casemap,
    "i;ascii-numeric": ascii_numeric,
}


def principals_account_capability(env: Any, txn: Any, account_id: str) -> dict[str, Any]:
    """
    The value for the account's owner (the Session of someone else has
    L{principals_account_capability_for}).
    """
    return {"currentUserPrincipalId": account_id}


def principals_account_capability_for(env: Any, txn: Any, account_id: str, principal: Principal) -> dict[str, Any]:
    """
    C{currentUserPrincipalId}: the user's own Principal (its id is their
    account's), in every account they may use.
    """
    return {"currentUserPrincipalId": principal.account_id}


def owner_account_capability(env: Any, txn: Any, account_id: str) -> dict[str, Any]:
    """
    Every account is owned by the individual Principal with its id, which
    the account itself can look up.
    """
    return {"accountIdForPrincipal": account_id, "principalId": account_id}


def _account_object(ctx: Context, account_id: str) -> dict[str, Any]:
    access = ctx.accounts()[account_id]
    registry = ctx.env.registry
    capabilities = {}
    for urn in sorted(access.capabilities):
        capability = registry.capabilities.get(urn)
        if capability is not None and capability.account is not None:
            capabilities[urn] = capability.account_value(ctx.env, ctx.txn, account_id, ctx.principal)
    return {
        "name": access.name,
        "isPersonal": access.is_personal,
        "isReadOnly": access.is_read_only,
        "accountCapabilities": capabilities,
    }


def to_json(ctx: Context, record: PrincipalRecord) -> dict[str, Any]:
    accounts = None
    if record.account_id is not None and record.account_id in ctx.accounts():
        accounts = {record.account_id: _account_object(ctx, record.account_id)}
    return {
        "id": record.id,
        "type": record.type,
        "name": record.name,
        "description": record.description,
        "email": record.email,
        "timeZone": record.time_zone,
        "capabilities": {},
        "accounts": accounts,
    }


def _sight(ctx: Context) -> str:
    """
    A digest of the accounts the user may use (subscribed or not: a
    Principal's C{accounts} lists them all).
    """
    listed = "\n".join(sorted(ctx.accounts()))
    return hashlib.sha256(listed.encode()).hexdigest()[:16]


def _contains(needle: str, *haystacks: str | None) -> bool:
    folded = needle.casefold()
    return any(h is not None and folded in h.casefold() for h in haystacks)


def _matches(value: dict[str, Any], principal: dict[str, Any], depth: int = 0) -> bool:
    if "operator" in value:
        results = [_matches(c, principal, depth + 1) for c in value["conditions"]]
        operator = value["operator"]
        if operator == "AND":
            return all(results)
        if operator == "OR":
            return any(results)
        return not any(results)
    for name, wanted in value.items():
        if name == "accountIds":
            if not set(wanted) & set(principal["accounts"] or ()):
                return False
        elif name == "email":
            if not _contains(wanted, principal["email"]):
                return False
        elif name == "name":
            if not _contains(wanted, principal["name"]):
                return False
        elif name == "text":
            if not _contains(wanted, principal["name"], principal["email"], principal["description"]):
                return False
        elif name == "type":
            if principal["type"] != wanted:
                return False
        elif principal["timeZone"] != wanted:
            return False
    return True


def _sort_key(name: str, key: Callable[[str], Any], principal: dict[str, Any]) -> Any:
    """
    A Principal's sort key for a property (null sorts as the empty string).
    """
    return key(principal[name] or "")


def check_filter(value: Any, depth: int = 0) -> None:
    """
    @raise MethodError: unsupportedFilter or invalidArguments.
    """
    if value is None:
        return
    if not isinstance(value, dict):
        raise invalid_arguments("filter: a FilterOperator or FilterCondition must be an object")
    if depth > 16:
        raise MethodError("unsupportedFilter", "filters nested deeper than 16 levels are not supported")
    if "operator" in value:
        if value["operator"] not in ("AND", "OR", "NOT") or not isinstance(value.get("conditions"), list):
            raise MethodError("unsupportedFilter", "a FilterOperator needs AND, OR or NOT and conditions")
        for condition in value["conditions"]:
            check_filter(condition, depth + 1)
        return
    for name, wanted in value.items():
        if name not in _CONDITIONS:
            raise MethodError("unsupportedFilter", f"Principal/query has no filter condition {name!r}")
        if name == "accountIds":
            if not isinstance(wanted, list) or not all(isinstance(i, str) for i in wanted):
                raise invalid_arguments("filter: accountIds must be a list of ids")
        elif not isinstance(wanted, str):
            raise invalid_arguments(f"filter: {name} must be a String")


class PrincipalType(DataType):
    """
    Principal/get, /changes, /set (the user's own description and
    timeZone only), /query and /queryChanges.
    """

    name = "Principal"
    capability = PRINCIPALS
    properties = ("id", "type", "name", "description", "email", "timeZone", "capabilities", "accounts")
    server_set = frozenset({"id", "type", "email", "capabilities", "accounts"})
    methods = ("get", "changes", "set", "query", "queryChanges")

    def state(self, ctx: Context, account_id: str) -> str:
        """
        C{<directory counter>-<sight>}: the counter moves with every change
        of a Principal; the sight is a digest of the accounts the user may
        use, on which each Principal's C{accounts} depends (RFC 9670
        section 2), so a grant that opens or closes an account to the user
        is a change for them alone (see L{do_changes}).
        """
        return f"{storage.principal_state(ctx.txn)}-{_sight(ctx)}"

    def parse_principal_state(self, state: Any) -> tuple[int, str | None] | None:
        """
        A Principal state as (counter, sight); a bare counter has no sight.
        """
        if not isinstance(state, str):
            return None
        counter, _, sight = state.partition("-")
        since = self.parse_state(counter)
        if since is None:
            return None
        return since, sight or None

    def _changes_since(self, ctx: Context, state: str) -> tuple[list[str], list[str], list[str]]:
        """
        The Principals created, updated and destroyed for this user since
        C{state}: those of the directory, and when the accounts the user
        may use differ, every Principal that owns an account (its
        C{accounts} may have changed; which ones did is not recorded, and
        naming them all tells the user nothing about anyone else).

        @raise MethodError: cannotCalculateChanges for a state this server
            never gave out.
        """
        parsed = self.parse_principal_state(state)
        if parsed is None or parsed[0] > storage.principal_state(ctx.txn):
            raise MethodError("cannotCalculateChanges", f"{state!r} is not a Principal state")
        since, sight = parsed
        created, updated, destroyed = storage.changes_since(ctx.txn, since)
        if sight != _sight(ctx):
            known = {*created, *updated}
            updated += [p.id for p in storage.get_principals(ctx.txn) if p.account_id is not None and p.id not in known]
        return created, updated, destroyed

    def fetch(
        self, ctx: Context, account_id: str, ids: list[str] | None, properties: frozenset[str], extra: dict[str, Any]
    ) -> list[dict[str, Any]]:
        return [to_json(ctx, record) for record in storage.get_principals(ctx.txn, ids)]

    def do_changes(self, ctx: Context, arguments: dict[str, Any]) -> dict[str, Any]:
        args = Arguments(arguments, ctx.method)
        account_id = args.id("accountId")
        since_state = args.string("sinceState", required=True, nullable=False)
        max_changes = args.unsigned_int("maxChanges", positive=True)
        args.done()
        ctx.account(account_id, self.capability)
        created, updated, destroyed = self._changes_since(ctx, since_state)
        total = len(created) + len(updated) + len(destroyed)
        if max_changes is not None and total > max_changes:
            raise MethodError("cannotCalculateChanges", f"{total} changes; maxChanges is {max_changes}")
        return {
            "accountId": account_id,
            "oldState": since_state,
            "newState": self.state(ctx, account_id),
            "hasMoreChanges": False,
            "created": created,
            "updated": updated,
            "destroyed": destroyed,
        }

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
        Users may change the description and timeZone of their own
        Principal; the name stays (RFC 9670 section 7.1, spoofing), and
        everything else is the directory's.
        """
        changed = {p for p in touched if new.get(p) != current.get(p)}
        if not changed:
            return None
        if object_id != ctx.principal.account_id or changed - {"description", "timeZone"}:
            raise set_error("forbidden", f"you may not change {', '.join(sorted(changed))} of Principal {object_id}")
        values: dict[str, Any] = {}
        if "description" in changed:
            if new["description"] is not None and not isinstance(new["description"], str):
                raise invalid_properties("description must be a String or null", "description")
            values["description"] = new["description"]
        if "timeZone" in changed:
            zone = new["timeZone"]
            if zone is not None and (not isinstance(zone, str) or zone not in zoneinfo.available_timezones()):
                raise invalid_properties("timeZone must be an IANA time zone id or null", "timeZone")
            values["time_zone"] = zone
        storage.update_principal(ctx.txn, object_id, **values)
        # RFC 9670 section 7.1: a Principal's description (and name) can
        # be used to pass for someone else, so the server SHOULD keep logs
        # of such changes, as an audit trail.
        log.info(
            "Principal {principal_id} changed {properties} from {old} to {new}",
            principal_id=object_id,
            properties=sorted(changed),
            old={p: current.get(p) for p in sorted(changed)},
            new={p: new.get(p) for p in sorted(changed)},
        )
        return None

    def query(
        self, ctx: Context, account_id: str, filter: Any, sort: list[dict[str, Any]], extra: dict[str, Any]
    ) -> list[str]:
        check_filter(filter)
        keys: list[tuple[str, Callable[[str], Any], bool]] = []
        for comparator in sort:
            if comparator["property"] not in ("name", "email", "type"):
                raise MethodError("unsupportedSort", f"Principals cannot be sorted by {comparator['property']!r}")
            ascending, collation = comparator_order(comparator)
            keys.append((comparator["property"], _COLLATION_KEYS[collation], ascending))
        found = [to_json(ctx, record) for record in storage.get_principals(ctx.txn)]
        chosen = [p for p in found if filter is None or _matches(filter, p)]
        chosen.sort(key=lambda p: p["id"])
        for name, key, ascending in reversed(keys):
            chosen.sort(key=functools.partial(_sort_key, name, key), reverse=not ascending)
        return [p["id"] for p in chosen]

    def do_query_changes(self, ctx: Context, arguments: dict[str, Any]) -> dict[str, Any]:
        """
        Every Principal changed since the old state is removed, and added
        again where it is in the current results.
        """
        args = Arguments(arguments, ctx.method)
        request = read_query_changes_arguments(args)
        args.done()
        account_id = request.account_id
        ctx.account(account_id, self.capability)
        sort = check_filter_and_sort(request.filter, request.sort)
        created, updated, destroyed = self._changes_since(ctx, request.since_query_state)
        ids = self.query(ctx, account_id, request.filter, sort, {})
        touched = set(created) | set(updated) | set(destroyed)
        # upToId is ignored: a Principal's name, email and type can change,
        # and RFC 8620 section 5.6 lets it cut the changes short only for
        # queries on immutable properties.
        removed, added = query_changes(ids, touched, set(created), None)
        return query_changes_response(
            account_id, request.since_query_state, self.state(ctx, account_id), ids, removed, added,
            request.max_changes, request.calculate_total,
        )


PRINCIPAL_TYPE = PrincipalType()

__all__ = ["PRINCIPAL_TYPE", "register", "window"]


def register(registry: Registry) -> None:
    """
    Add the Principals capabilities, Principal/* and ShareNotification/*,
    and the account lookup and blob check of sharing.
    """
    from jmapd import sharing
    from jmapd.sharing import notification

    registry.add_capability(
        Capability(
            PRINCIPALS,
            lambda env: {},
            principals_account_capability,
            account_for=principals_account_capability_for,
        )
    )
    # An account capability only: RFC 9670 keeps it out of the Session's
    # capabilities.
    registry.add_capability(Capability(OWNER, lambda env: {}, owner_account_capability, in_session=False))
    register_standard_methods(registry, PRINCIPAL_TYPE)
    notification.register(registry)
    if sharing.shared_accounts not in registry.account_lookups:
        registry.account_lookups.append(sharing.shared_accounts)
