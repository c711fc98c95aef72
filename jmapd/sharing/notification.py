# -*- test-case-name: tests.mail.test_sharing -*-
"""
The ShareNotification data type (RFC 9670 section 3): what changed in a
user's rights on an object someone else shares.

Notifications live in the grantee's own account, with its changelog (type
ShareNotification) for states; only the server creates them and the user
may only destroy them.  Grants to groups make none (section 3).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from functools import partial
from typing import Any

import orjson

from jmapd.protocol.arguments import Arguments
from jmapd.protocol.engine import Context, Registry
from jmapd.protocol.errors import MethodError, invalid_arguments, set_error
from jmapd.protocol.standard import (
    DataType,
    check_filter_and_sort,
    filter_predicate,
    query_changes_response,
    read_query_changes_arguments,
    register_standard_methods,
)
from jmapd.sharing import PRINCIPALS
from jmapd.storage import changelog
from jmapd.storage import principals as principal_storage
from jmapd.storage.emails import parse_date_ms

TYPE_NAME = "ShareNotification"

_CONDITIONS = frozenset({"after", "before", "objectType", "objectAccountId"})

#: The state of the ShareNotifications of an account other than the
#: user's own: they have none there, now or ever.
ELSEWHERE_STATE = "0"



def _equals(name: str, wanted: str, notification: dict[str, Any]) -> bool:
    """
    A filter test: the notification's C{name} is C{wanted}.
    """
    return bool(notification[name] == wanted)

def parse_filter(value: Any) -> Callable[[dict[str, Any]], bool]:
    """
    A ShareNotification/query filter as a predicate: a FilterCondition
    (RFC 9670 section 3.6) or, as in every standard /query (RFC 8620
    section 5.5), a FilterOperator of them.

    @raise MethodError: unsupportedFilter or invalidArguments.
    """
    return filter_predicate(value, _condition)


def _condition(value: dict[str, Any]) -> Callable[[dict[str, Any]], bool]:
    """
    One ShareNotification/query FilterCondition as a predicate.
    """
    tests: list[Callable[[dict[str, Any]], bool]] = []
    for name, wanted in value.items():
        if name not in _CONDITIONS:
            raise MethodError("unsupportedFilter", f"ShareNotification/query has no condition {name!r}")
        if name in ("after", "before"):
            if wanted is not None:
                tests.append(partial(_created_test, name, _parse_utc(wanted)))
        else:
            if not isinstance(wanted, str):
                raise invalid_arguments(f"filter: {name} must be a String")
            tests.append(partial(_equals, name, wanted))
    return lambda notification: all(test(notification) for test in tests)


def _created_test(name: str, when: float, notification: dict[str, Any]) -> bool:
    """
    A filter test: created on or C{after} C{when}, or C{before} it.
    """
    created = notification["_created"]
    return bool(created >= when if name == "after" else created < when)


def _utc(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _parse_utc(value: Any) -> float:
    """
    Seconds since the epoch for a UTCDate, with its fraction of a second
    if it has one (RFC 8620 section 1.4 omits it only when zero).
    """
    ms = parse_date_ms(value, utc_only=True)
    if ms is None:
        raise invalid_arguments(f"filter: after and before must be UTCDates, got {value!r}")
    return ms / 1000


def notify(
    txn: Any,
    grantee_id: str,
    changed_by: str,
    object_type: str,
    object_account_id: str,
    object_id: str,
    name: str,
    old_rights: dict[str, bool] | None,
    new_rights: dict[str, bool] | None,
    now: float,
) -> None:
    """
    Tell the individual C{grantee_id} (an account id) that their rights on
    an object changed, made by the principal C{changed_by}.
    """
    if old_rights == new_rights:
        return
    by = principal_storage.get_principals(txn, [changed_by])
    person = {
        "name": by[0].name if by else changed_by,
        "email": by[0].email if by else None,
        "principalId": changed_by if by else None,
    }
    notification_id = "n" + uuid.uuid4().hex[:20]
    txn.lock_account(grantee_id)
    txn.execute(
        "INSERT INTO share_notifications (account_id, id, created, changed_by, object_type, object_account_id,"
        " object_id, name, old_rights, new_rights) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            grantee_id,
            notification_id,
            now,
            orjson.dumps(person).decode(),
            object_type,
            object_account_id,
            object_id,
            name,
            None if old_rights is None else orjson.dumps(old_rights).decode(),
            None if new_rights is None else orjson.dumps(new_rights).decode(),
        ),
    )
    changelog.record_change(txn, grantee_id, TYPE_NAME, notification_id, changelog.CREATED)


def dismiss(txn: Any, user_id: str, object_type: str, object_account_id: str, object_id: str) -> None:
    """
    Destroy the user's notifications about an object they have just
    subscribed to: RFC 9670 section 3.1 says the server SHOULD, since
    subscribing shows they have seen the change.
    """
    found = [
        row[0]
        for row in txn.fetchall(
            "SELECT id FROM share_notifications WHERE account_id = ? AND object_type = ?"
            " AND object_account_id = ? AND object_id = ?",
            (user_id, object_type, object_account_id, object_id),
        )
    ]
    if not found:
        return
    txn.lock_account(user_id)
    for notification_id in found:
        txn.execute("DELETE FROM share_notifications WHERE account_id = ? AND id = ?", (user_id, notification_id))
        changelog.record_change(txn, user_id, TYPE_NAME, notification_id, changelog.DESTROYED)


def _loads(text: Any) -> Any:
    return None if text is None else orjson.loads(text)


class ShareNotificationType(DataType):
    """
    ShareNotification/get, /changes, /set (destroy only), /query and
    /queryChanges, in the user's own account (other accounts have none
    for them).
    """

    name = TYPE_NAME
    capability = PRINCIPALS
    properties = (
        "id",
        "created",
        "changedBy",
        "objectType",
        "objectAccountId",
        "objectId",
        "name",
        "oldRights",
        "newRights",
    )
    server_set = frozenset(properties)
    methods = ("get", "changes", "set", "query", "queryChanges")

    def state(self, ctx: Context, account_id: str) -> str:
        """
        The changelog's in the user's own account; elsewhere always
        L{ELSEWHERE_STATE}, since the owner's notifications are none of
        theirs (nor when the owner gets one).
        """
        if account_id != ctx.principal.account_id:
            return ELSEWHERE_STATE
        return super().state(ctx, account_id)

    def do_changes(self, ctx: Context, arguments: dict[str, Any]) -> dict[str, Any]:
        """
        In an account other than the user's own nothing ever changes: the
        changelog there is the owner's notifications, which /get does not
        show the user, so /changes must not name them either.
        """
        if arguments.get("accountId") == ctx.principal.account_id:
            return super().do_changes(ctx, arguments)
        args = Arguments(arguments, ctx.method)
        account_id = args.id("accountId")
        since_state = args.string("sinceState", required=True, nullable=False)
        args.unsigned_int("maxChanges", positive=True)
        args.done()
        ctx.account(account_id, self.capability)
        if since_state != ELSEWHERE_STATE:
            raise MethodError("cannotCalculateChanges", f"{since_state!r} is not a {self.name} state")
        return {
            "accountId": account_id,
            "oldState": since_state,
            "newState": ELSEWHERE_STATE,
            "hasMoreChanges": False,
            "created": [],
            "updated": [],
            "destroyed": [],
        }

    def do_query_changes(self, ctx: Context, arguments: dict[str, Any]) -> dict[str, Any]:
        """
        As L{do_changes}: nothing changes in another account's (empty)
        results, and none of the owner's notifications is named removed.
        """
        if arguments.get("accountId") == ctx.principal.account_id:
            return super().do_query_changes(ctx, arguments)
        args = Arguments(arguments, ctx.method)
        request = read_query_changes_arguments(args)
        args.done()
        ctx.account(request.account_id, self.capability)
        ids = self.query(ctx, request.account_id, request.filter, check_filter_and_sort(request.filter, request.sort), {})
        if request.since_query_state != ELSEWHERE_STATE:
            raise MethodError("cannotCalculateChanges", f"{request.since_query_state!r} is not a query state")
        return query_changes_response(
            request.account_id, request.since_query_state, ELSEWHERE_STATE, ids, [], [], request.max_changes,
            request.calculate_total,
        )

    def _rows(self, ctx: Context, account_id: str) -> list[Any]:
        if account_id != ctx.principal.account_id:
            return []
        return list(
            ctx.txn.fetchall(
                "SELECT id, created, changed_by, object_type, object_account_id, object_id, name, old_rights,"
                " new_rights FROM share_notifications WHERE account_id = ?",
                (account_id,),
            )
        )

    def fetch(
        self, ctx: Context, account_id: str, ids: list[str] | None, properties: frozenset[str], extra: dict[str, Any]
    ) -> list[dict[str, Any]]:
        wanted = None if ids is None else set(ids)
        return [
            {
                "id": row[0],
                "created": _utc(float(row[1])),
                "changedBy": _loads(row[2]),
                "objectType": row[3],
                "objectAccountId": row[4],
                "objectId": row[5],
                "name": row[6],
                "oldRights": _loads(row[7]),
                "newRights": _loads(row[8]),
                "_created": float(row[1]),
            }
            for row in self._rows(ctx, account_id)
            if wanted is None or row[0] in wanted
        ]

    def destroy(self, ctx: Context, account_id: str, object_id: str, extra: dict[str, Any]) -> None:
        ctx.txn.execute(
            "DELETE FROM share_notifications WHERE account_id = ? AND id = ?", (account_id, object_id)
        )
        changelog.record_change(ctx.txn, account_id, TYPE_NAME, object_id, changelog.DESTROYED)

    def query(
        self, ctx: Context, account_id: str, filter: Any, sort: list[dict[str, Any]], extra: dict[str, Any]
    ) -> list[str]:
        test = parse_filter(filter)
        ascending = True
        for comparator in sort:
            if comparator["property"] != "created":
                raise MethodError("unsupportedSort", "ShareNotifications are sorted by created only")
            ascending = comparator.get("isAscending", True)
            if not isinstance(ascending, bool):
                raise invalid_arguments("sort: isAscending must be a Boolean")
        found = [n for n in self.fetch(ctx, account_id, None, frozenset(), {}) if test(n)]
        found.sort(key=lambda n: (n["_created"], n["id"]), reverse=not ascending)
        return [n["id"] for n in found]

    def do_get(self, ctx: Context, arguments: dict[str, Any]) -> dict[str, Any]:
        response = super().do_get(ctx, arguments)
        for obj in response["list"]:
            obj.pop("_created", None)
        return response

    def create(self, ctx: Context, account_id: str, obj: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
        raise set_error("forbidden", "ShareNotifications are made by the server only")

    def _update_one(
        self, ctx: Context, account_id: str, object_id: str, patch: dict[str, Any], extra: dict[str, Any]
    ) -> dict[str, Any] | None:
        """
        Every update of a notification is C{forbidden}, whatever its patch
        says: RFC 9670 section 3.5 says any attempt to update MUST be
        rejected so, where the standard checks would make a patch of a
        server-set property (all of them are) C{invalidProperties}.
        """
        if not self.fetch(ctx, account_id, [object_id], frozenset({"id"}), extra):
            raise set_error("notFound", f"no {self.name} {object_id!r}")
        raise set_error("forbidden", "ShareNotifications cannot be updated, only destroyed")

    def check_create(self, obj: Any) -> dict[str, Any]:
        raise set_error("forbidden", "ShareNotifications are made by the server only")


SHARE_NOTIFICATION_TYPE = ShareNotificationType()


def register(registry: Registry) -> None:
    register_standard_methods(registry, SHARE_NOTIFICATION_TYPE)
