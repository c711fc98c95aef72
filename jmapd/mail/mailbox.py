# -*- test-case-name: tests.mail.test_mailbox -*-
"""
The Mailbox data type (RFC 8621 section 2): Mailbox/get, Mailbox/changes
and Mailbox/set.

The Mailboxes of an account form a forest in which sibling names and roles
are unique.  RFC 8620 section 5.3 asks only that the I{final} state of a
/set be valid: a client may swap two names, or move a child away and
destroy its parent, in one call.  So Mailbox/set first applies the whole
call with the tree rules deferred and checks the result once; only when
that result breaks a rule is the call undone and replayed one object at a
time, each checked against the state before it, so the object that breaks
the rule is the one rejected.

What the principal may do with a Mailbox is decided in one place,
L{my_rights}, which is also the C{myRights} property.
"""

from __future__ import annotations

import copy
import functools
import unicodedata
from collections import defaultdict
from collections.abc import Callable, Mapping
from typing import Any

import attrs

from jmapd import sharing
from jmapd.mail import MAIL
from jmapd.protocol.arguments import Arguments, is_id, is_unsigned_int
from jmapd.protocol.engine import Context, Registry
from jmapd.protocol.errors import (
    MethodError,
    SetErrorException,
    invalid_arguments,
    invalid_properties,
    set_error,
)
from jmapd.protocol.standard import (
    DataType,
    check_filter_and_sort,
    comparator_order,
    filter_predicate,
    query_changes,
    query_changes_response,
    read_query_changes_arguments,
    register_standard_methods,
)
from jmapd.sharing import hide_changes, notification
from jmapd.storage import changelog
from jmapd.storage import mailboxes as storage
from jmapd.storage import principals as principal_storage
from jmapd.storage.mailboxes import Mailbox

#: The roles a Mailbox may have: the special-use names of the IANA "IMAP
#: Mailbox Name Attributes" registry (RFC 8457, RFC 8621 section 10.5 for
#: inbox, and the later snoozed, scheduled and memos), lower-cased.  The
#: registry's other entries (HasChildren, Noselect, Subscribed, ...)
#: describe a mailbox's state in an IMAP LIST, not a purpose, so they are
#: not roles.
ROLES = frozenset(
    {
        "all",
        "archive",
        "drafts",
        "flagged",
        "important",
        "inbox",
        "junk",
        "sent",
        "trash",
        "snoozed",
        "scheduled",
        "memos",
    }
)

#: The MailboxRights properties (RFC 8621 section 2).
RIGHTS = (
    "mayReadItems",
    "mayAddItems",
    "mayRemoveItems",
    "maySetSeen",
    "maySetKeywords",
    "mayCreateChild",
    "mayRename",
    "mayDelete",
    "maySubmit",
)

#: The server-maintained counts; Mailbox/changes names them in
#: updatedProperties when nothing else changed.
COUNT_PROPERTIES = ("totalEmails", "unreadEmails", "totalThreads", "unreadThreads")

#: sortOrder is an UnsignedInt below 2^31.
MAX_SORT_ORDER = 2**31 - 1

#: The properties whose changes the tree rules are about.
_TREE_PROPERTIES = frozenset({"name", "parentId", "role"})


def my_rights(ctx: Context, account_id: str, mailbox: Mailbox | None) -> dict[str, bool]:
    """
    The principal's rights on a Mailbox of the account (its C{myRights}).
    C{mailbox=None} stands for the account's top level, where
    C{mayCreateChild} means a top-level Mailbox may be created.

    The owner may do everything; anyone else what the Mailbox's shareWith
    gives them and the groups they are in (L{jmapd.sharing}), and nothing
    at the top level.  Every check of Mailbox/set goes through here.
    """
    granted = sharing.ctx_rights(ctx, account_id)
    if granted is None:
        return dict.fromkeys(RIGHTS, True)
    rights = frozenset() if mailbox is None else granted.get(mailbox.id, frozenset())
    return {right: right in rights for right in RIGHTS}


def rights_json(rights: frozenset[str] | set[str]) -> dict[str, bool]:
    return {right: right in rights for right in RIGHTS}


def visible_mailboxes(ctx: Context, account_id: str) -> list[Mailbox]:
    """
    The account's Mailboxes the principal may see (every one of their own
    account; of another, those they have some right on), with
    C{is_subscribed} their own subscription.
    """
    found = storage.get_mailboxes(ctx.txn, account_id)
    granted = sharing.ctx_rights(ctx, account_id)
    if granted is None:
        return found
    subscribed = storage.subscriptions(ctx.txn, ctx.principal.account_id, account_id).get(account_id, set())
    return [attrs.evolve(m, is_subscribed=m.id in subscribed) for m in found if m.id in granted]


def check_share_with(ctx: Context, account_id: str, value: Any) -> dict[str, frozenset[str]]:
    """
    A shareWith value as C{{principal_id: rights}}.

    @raise SetErrorException: invalidProperties.
    """
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise invalid_properties("shareWith must be a map of Principal ids to MailboxRights, or null", "shareWith")
    known = {p.id for p in principal_storage.get_principals(ctx.txn, list(value))}
    result: dict[str, frozenset[str]] = {}
    for principal_id, rights in value.items():
        if principal_id == account_id or principal_id not in known:
            raise invalid_properties(f"{principal_id!r} is not a Principal to share with", "shareWith")
        if not isinstance(rights, dict) or not all(
            r in RIGHTS and isinstance(v, bool) for r, v in rights.items()
        ):
            raise invalid_properties("each shareWith value must be a MailboxRights object", "shareWith")
        result[principal_id] = frozenset(r for r, v in rights.items() if v)
    return result


def _effective(ctx: Context, user_id: str, account_id: str, mailbox_id: str) -> dict[str, bool] | None:
    granted = storage.grants_for(ctx.txn, sharing.principal_ids(ctx.txn, user_id), account_id)
    rights = granted.get(account_id, {}).get(mailbox_id)
    return rights_json(rights) if rights else None


def change_share_with(
    ctx: Context, account_id: str, mailbox: Mailbox, grants: dict[str, frozenset[str]]
) -> None:
    """
    Store a Mailbox's new grants and tell every individual whose own
    grant changed their rights on it (ShareNotification).  A change of a
    group's grant makes none, for its members either: RFC 9670 section 3
    says the server SHOULD NOT notify for permission changes to a group
    principal, even if the user is in the group.  Those left without any
    right on it lose their subscription to it.
    """
    old = storage.get_share_with(ctx.txn, account_id, [mailbox.id]).get(mailbox.id, {})
    everyone = set(old) | set(grants)
    groups = [p.id for p in principal_storage.get_principals(ctx.txn, everyone) if p.type != "individual"]
    named = {user for user in everyone - set(groups) if old.get(user) != grants.get(user)}
    individuals = everyone - set(groups)
    for group_id in groups:
        # Members of groups in the group too: they inherit its rights.
        individuals |= set(principal_storage.members_of(ctx.txn, group_id))
    individuals.discard(account_id)
    individuals = {
        p.id for p in principal_storage.get_principals(ctx.txn, individuals) if p.account_id is not None
    }
    before = {user: _effective(ctx, user, account_id, mailbox.id) for user in individuals}
    storage.set_share_with(ctx.txn, account_id, mailbox.id, grants)
    storage.record_update(ctx.txn, account_id, mailbox.id)
    after = {user: _effective(ctx, user, account_id, mailbox.id) for user in individuals}
    # Who now sees the Mailbox, or no longer does; who may now read its
    # Emails, or no longer may (what /changes of the account reports them).
    seeing = [u for u in individuals if (before[u] is None) != (after[u] is None)]
    principal_storage.record_sight(
        ctx.txn, account_id, principal_storage.MAILBOX, seeing, [mailbox.id],
        changelog.get_modseq(ctx.txn, account_id, storage.TYPE_NAME),
    )
    reading = [u for u in individuals if _may_read(before[u]) != _may_read(after[u])]
    principal_storage.record_mailbox_contents_sight(ctx.txn, account_id, [mailbox.id], reading)
    # A member of a group gets no notification to move a state of their
    # own account, which is what tells their push channels to follow the
    # account or stop (L{jmapd.push.follow}): that state is moved here.
    principal_storage.touch_shared_accounts(ctx.txn, sorted(u for u in seeing if u not in named))
    # Whoever has no right left on the Mailbox is no longer subscribed to
    # it (isSubscribed SHOULD default to false in a shared account, RFC
    # 8621 section 2: a grant given again must not bring the account back
    # into their Session as if they had subscribed).  One who had no right
    # before either holds a subscription an older jmapd kept past a
    # revocation: it goes too, before this grant can revive it.
    for user in storage.subscribers(ctx.txn, account_id, mailbox.id):
        if before.get(user) is None or after.get(user) is None:
            storage.set_subscribed(ctx.txn, account_id, mailbox.id, user, False)
    for user in sorted(individuals & named):
        notification.notify(
            ctx.txn, user, ctx.principal.account_id, "Mailbox", account_id, mailbox.id, mailbox.name,
            before[user], after[user], ctx.now,
        )


def _may_read(rights: dict[str, bool] | None) -> bool:
    return bool(rights and rights["mayReadItems"])


def to_json(
    mailbox: Mailbox, rights: dict[str, bool], share_with: dict[str, frozenset[str]] | None = None
) -> dict[str, Any]:
    """
    A stored Mailbox as the JMAP object with every property.  Its counts
    are 0 for a user who may not read its Emails: how many there are is
    theirs to know only with mayReadItems (IMAP's STATUS needs "r" too).
    """
    readable = rights["mayReadItems"]
    return {
        "id": mailbox.id,
        "name": mailbox.name,
        "parentId": mailbox.parent_id,
        "role": mailbox.role,
        "sortOrder": mailbox.sort_order,
        "totalEmails": mailbox.total_emails if readable else 0,
        "unreadEmails": mailbox.unread_emails if readable else 0,
        "totalThreads": mailbox.total_threads if readable else 0,
        "unreadThreads": mailbox.unread_threads if readable else 0,
        "myRights": rights,
        "isSubscribed": mailbox.is_subscribed,
        "shareWith": {p: rights_json(r) for p, r in sorted(share_with.items())} if share_with else None,
    }


def check_tree(
    tree: Mapping[str, Mailbox], focus: Mapping[str, frozenset[str] | set[str]], max_depth: int
) -> SetErrorException | None:
    """
    The first rule of RFC 8621 section 2 that the Mailboxes in C{focus}
    break in C{tree} (all of an account's Mailboxes by id), as the SetError
    to give, or C{None}.

    @param focus: Mailbox ids, each with the properties that changed
        (C{name}, C{parentId}, C{role}): only rules about those are checked,
        so a Mailbox that was valid stays unchecked where it did not change.
    """
    children: dict[str | None, list[str]] = defaultdict(list)
    names: dict[tuple[str | None, str], int] = defaultdict(int)
    roles: dict[str, int] = defaultdict(int)
    for node in tree.values():
        children[node.parent_id].append(node.id)
        names[(node.parent_id, node.name)] += 1
        if node.role is not None:
            roles[node.role] += 1
    for mailbox_id, changed in focus.items():
        mailbox = tree.get(mailbox_id)
        if mailbox is None:
            continue
        if "parentId" in changed:
            if mailbox.parent_id is not None and mailbox.parent_id not in tree:
                return invalid_properties(f"there is no Mailbox {mailbox.parent_id!r}", "parentId")
            depth = 1
            ancestor = mailbox.parent_id
            seen = {mailbox.id}
            while ancestor is not None:
                if ancestor in seen:
                    return invalid_properties("a Mailbox cannot be its own ancestor", "parentId")
                seen.add(ancestor)
                depth += 1
                parent = tree.get(ancestor)
                ancestor = None if parent is None else parent.parent_id
            if depth + _height(mailbox.id, children) > max_depth:
                return invalid_properties(f"Mailboxes may be nested at most {max_depth} deep", "parentId")
        if ("name" in changed or "parentId" in changed) and names[(mailbox.parent_id, mailbox.name)] > 1:
            return invalid_properties(f"a sibling Mailbox is named {mailbox.name!r} already", "name")
        if "role" in changed and mailbox.role is not None and roles[mailbox.role] > 1:
            return invalid_properties(f"another Mailbox has the role {mailbox.role!r}", "role")
    return None


def _height(root: str, children: Mapping[str | None, list[str]]) -> int:
    """
    How many levels of descendants C{root} has (0 for a leaf).
    """
    height = 0
    level = [root]
    seen = {root}
    while True:
        level = [child for node in level for child in children.get(node, ()) if child not in seen]
        if not level:
            return height
        seen.update(level)
        height += 1


def _dependency(create: Mapping[str, Any], creation_id: str) -> str | None:
    obj = create.get(creation_id)
    parent = obj.get("parentId") if isinstance(obj, dict) else None
    if isinstance(parent, str) and parent.startswith("#") and parent[1:] in create:
        return parent[1:]
    return None


def order_creates(create: Mapping[str, Any]) -> dict[str, Any]:
    """
    The create map with every Mailbox after the one its C{parentId}
    references by C{#creationId}, so a parent and its children can be
    created in one call in any order (RFC 8620 section 5.3).  Otherwise the
    client's order is kept; references in a loop stay unresolvable.
    """
    order: list[str] = []
    seen: set[str] = set()
    for creation_id in create:
        chain: list[str] = []
        current: str | None = creation_id
        while current is not None and current not in seen:
            seen.add(current)
            chain.append(current)
            current = _dependency(create, current)
        order.extend(reversed(chain))
    return {creation_id: create[creation_id] for creation_id in order}


class _ReplayOneByOne(Exception):
    """
    The final state of a Mailbox/set with deferred checks breaks a rule.
    """


class MailboxType(DataType):
    """
    Mailbox/get, /changes and /set on L{jmapd.storage.mailboxes}.  The
    counts are server-set: only the Email code changes them, through
    C{adjust_counts}.
    """

    name = "Mailbox"
    capability = MAIL
    properties = (
        "id",
        "name",
        "parentId",
        "role",
        "sortOrder",
        "totalEmails",
        "unreadEmails",
        "totalThreads",
        "unreadThreads",
        "myRights",
        "isSubscribed",
        "shareWith",
    )
    server_set = frozenset({"id", *COUNT_PROPERTIES, "myRights"})
    methods = ("get", "changes", "set", "query", "queryChanges")

    # -- /get --------------------------------------------------------------

    def fetch(
        self, ctx: Context, account_id: str, ids: list[str] | None, properties: frozenset[str], extra: dict[str, Any]
    ) -> list[dict[str, Any]]:
        found = visible_mailboxes(ctx, account_id)
        if ids is not None:
            wanted = set(ids)
            found = [mailbox for mailbox in found if mailbox.id in wanted]
        owner = account_id == ctx.principal.account_id
        shares = (
            storage.get_share_with(ctx.txn, account_id, [m.id for m in found])
            if owner and "shareWith" in properties
            else {}
        )
        return [
            to_json(mailbox, my_rights(ctx, account_id, mailbox), shares.get(mailbox.id)) for mailbox in found
        ]

    def count(self, ctx: Context, account_id: str) -> int:
        if account_id != ctx.principal.account_id:
            return len(visible_mailboxes(ctx, account_id))
        return storage.count_mailboxes(ctx.txn, account_id)

    def do_changes(self, ctx: Context, arguments: dict[str, Any]) -> dict[str, Any]:
        """
        In a shared account, Mailboxes the user cannot see are left out,
        and one they saw that went out of sight is reported destroyed
        (L{jmapd.sharing.hide_changes}).
        """
        response = super().do_changes(ctx, arguments)
        account_id = response["accountId"]
        if account_id == ctx.principal.account_id:
            return response
        counts_only = response.get("updatedProperties") is not None
        visible = visible_mailboxes(ctx, account_id)
        visible_ids = {m.id for m in visible}
        since = int(response["oldState"])
        response = hide_changes(ctx, arguments, response, storage.TYPE_NAME, lambda ids: visible_ids & set(ids))
        # A Mailbox the user may see but not read shows zero counts, so a
        # change of its counts alone (mail arriving in it) is none of
        # theirs: reporting it would tell them when.
        unreadable = {m.id for m in visible if not my_rights(ctx, account_id, m)["mayReadItems"]}
        hidden = [i for i in response["updated"] if i in unreadable]
        if hidden:
            changed = changelog.props_changed_since(ctx.txn, account_id, storage.TYPE_NAME, hidden, since)
            response["updated"] = [i for i in response["updated"] if i not in unreadable or i in changed]
        if counts_only and (response["created"] or response["destroyed"]):
            response["updatedProperties"] = None
        return response

    # -- /query and /queryChanges ----------------------------------------------

    def query_arguments(self, args: Arguments) -> dict[str, Any]:
        return {"sortAsTree": args.boolean("sortAsTree"), "filterAsTree": args.boolean("filterAsTree")}

    def query(
        self, ctx: Context, account_id: str, filter: Any, sort: list[dict[str, Any]], extra: dict[str, Any]
    ) -> list[str]:
        return query_mailboxes(
            visible_mailboxes(ctx, account_id),
            parse_mailbox_filter(filter),
            parse_mailbox_sort(sort),
            sort_as_tree=extra["sortAsTree"],
            filter_as_tree=extra["filterAsTree"],
        )

    def query_state(self, ctx: Context, account_id: str) -> str:
        """
        Only name, parentId, role, sortOrder and isSubscribed changes can
        change a Mailbox query, so the count changes every delivery makes
        leave the queryState alone.
        """
        return str(storage.query_state(ctx.txn, account_id))

    def do_query_changes(self, ctx: Context, arguments: dict[str, Any]) -> dict[str, Any]:
        """
        Mailbox/queryChanges from the changes of query-relevant properties.
        Every property a Mailbox query uses can change, so C{upToId} is
        ignored (RFC 8620 section 5.6); with sortAsTree or filterAsTree a
        change to one Mailbox can move its whole subtree, so then any change
        reports every Mailbox.  With filterAsTree it can also take the
        subtree out of the results: C{removed} must name every Mailbox that
        left them, so every Mailbox of the account is reported removed, not
        only those still in the results (a client that did not ask for the
        total would otherwise keep the ones that left).
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
            raise MethodError("cannotCalculateChanges", f"{request.since_query_state!r} is not a Mailbox query state")
        try:
            touched, created = storage.query_changes_since(ctx.txn, account_id, since)
        except changelog.CannotCalculateChanges as e:
            raise MethodError("cannotCalculateChanges", str(e)) from None
        shared = account_id != ctx.principal.account_id
        if shared:
            moved = sharing.hide_removed(
                ctx, account_id, storage.TYPE_NAME, since, storage.query_state(ctx.txn, account_id), touched
            )
        ids = self.query(ctx, account_id, request.filter, sort, extra)
        if touched and (extra["sortAsTree"] or extra["filterAsTree"]):
            touched |= set(ids)
        if touched and extra["filterAsTree"]:
            touched |= storage.mailbox_ids(ctx.txn, account_id)
        removed, added = query_changes(ids, touched, created, None)
        if shared:
            # Of someone else's account: only Mailboxes the user sees, or
            # saw since the old state (never one they could not see).
            seen = moved | {m.id for m in visible_mailboxes(ctx, account_id)}
            removed = [i for i in removed if i in seen]
        return query_changes_response(
            account_id, request.since_query_state, self.query_state(ctx, account_id), ids, removed, added,
            request.max_changes, request.calculate_total,
        )

    # -- /changes ----------------------------------------------------------

    def changes_extra(self, ctx: Context, changes: changelog.Changes) -> dict[str, Any]:
        """
        C{updatedProperties}: the counts when the only changes since the old
        state are count changes of existing Mailboxes; C{null} when
        anything else changed (a created or destroyed Mailbox is a change
        of more than counts).
        """
        counts_only = (
            bool(changes.updated) and not changes.created and not changes.destroyed and not changes.props_changed
        )
        return {"updatedProperties": list(COUNT_PROPERTIES) if counts_only else None}

    # -- /set --------------------------------------------------------------

    def set_arguments(self, args: Arguments) -> dict[str, Any]:
        return {"onDestroyRemoveEmails": args.boolean("onDestroyRemoveEmails")}

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
        """
        Apply the call with the tree rules deferred and check the final
        state; if it is invalid, undo everything and replay the call one
        object at a time (see the module docstring).
        """
        if create:
            create = order_creates(create)
        total = len(create or ()) + len(update or ()) + len(destroy or ())
        if total > 1:
            txn = ctx.txn
            created_ids = dict(ctx.created_ids)
            changed_states = copy.deepcopy(txn.__dict__.get("changed_states"))
            callbacks = len(txn.after_commit_callbacks)
            tree_changes: dict[str, set[str]] = defaultdict(set)
            deferred = {**extra, "deferred": True, "tree_changes": tree_changes}
            try:
                with txn.savepoint():
                    response = super().run_set(ctx, account_id, if_in_state, create, update, destroy, deferred)
                    if not self._final_state_valid(ctx, account_id, tree_changes, bool(response["created"])):
                        raise _ReplayOneByOne()
                return response
            except _ReplayOneByOne:
                ctx.created_ids.clear()
                ctx.created_ids.update(created_ids)
                if changed_states is None:
                    txn.__dict__.pop("changed_states", None)
                else:
                    txn.__dict__["changed_states"] = changed_states
                del txn.after_commit_callbacks[callbacks:]
        return super().run_set(ctx, account_id, if_in_state, create, update, destroy, {**extra, "deferred": False})

    def _final_state_valid(
        self, ctx: Context, account_id: str, tree_changes: Mapping[str, set[str]], created: bool
    ) -> bool:
        tree = {mailbox.id: mailbox for mailbox in storage.get_mailboxes(ctx.txn, account_id)}
        if created and len(tree) > ctx.config.mailbox_max_total:
            return False
        if any(m.parent_id is not None and m.parent_id not in tree for m in tree.values()):
            return False
        return check_tree(tree, tree_changes, ctx.config.mailbox_max_depth) is None

    def _check_rules(
        self, ctx: Context, account_id: str, mailbox: Mailbox, changed: frozenset[str], extra: dict[str, Any]
    ) -> None:
        """
        Check the tree rules for C{mailbox} as it would be stored, now or
        (deferred) once the whole call is applied.
        """
        if extra.get("deferred"):
            extra["tree_changes"][mailbox.id].update(changed)
            return
        tree = {m.id: m for m in storage.get_mailboxes(ctx.txn, account_id)}
        tree[mailbox.id] = mailbox
        problem = check_tree(tree, {mailbox.id: changed}, ctx.config.mailbox_max_depth)
        if problem is not None:
            raise problem

    def _read(
        self, ctx: Context, account_id: str, values: Mapping[str, Any], response: dict[str, Any]
    ) -> dict[str, Any]:
        """
        Check the client-settable properties in C{values} and return them
        as storage attributes; C{response} gets the ones the server stored
        differently from what the client sent (a normalised name, a
        resolved C{#creationId} parentId).
        """
        read: dict[str, Any] = {}
        if "name" in values:
            name = values["name"]
            if not isinstance(name, str) or not name:
                raise invalid_properties("name must be a non-empty String", "name")
            if any(unicodedata.category(c) == "Cc" for c in name):
                raise invalid_properties("name must not contain control characters", "name")
            normalised = unicodedata.normalize("NFC", name)
            limit = ctx.config.mailbox_name_max_len
            if len(normalised.encode("utf-8")) > limit:
                raise invalid_properties(f"name is longer than {limit} octets (maxSizeMailboxName)", "name")
            if normalised != name:
                response["name"] = normalised
            read["name"] = normalised
        if "parentId" in values:
            parent = values["parentId"]
            if parent is not None:
                given = parent
                if not isinstance(parent, str) or not (is_id(parent) or parent.startswith("#")):
                    raise invalid_properties("parentId must be a Mailbox id or null", "parentId")
                parent = ctx.resolve_id(parent)
                granted = sharing.ctx_rights(ctx, account_id)
                if (
                    parent is None
                    or not storage.mailbox_exists(ctx.txn, account_id, parent)
                    or (granted is not None and parent not in granted)
                ):
                    raise invalid_properties(f"there is no Mailbox {given!r}", "parentId")
                if parent != given:
                    response["parentId"] = parent
            read["parent_id"] = parent
        if "role" in values:
            role = values["role"]
            if role is not None and (not isinstance(role, str) or role not in ROLES):
                raise invalid_properties(f"role must be null or one of {', '.join(sorted(ROLES))}", "role")
            read["role"] = role
        if "sortOrder" in values:
            sort_order = values["sortOrder"]
            if not is_unsigned_int(sort_order) or sort_order > MAX_SORT_ORDER:
                raise invalid_properties("sortOrder must be an UnsignedInt below 2^31", "sortOrder")
            read["sort_order"] = sort_order
        if "isSubscribed" in values:
            if not isinstance(values["isSubscribed"], bool):
                raise invalid_properties("isSubscribed must be a Boolean", "isSubscribed")
            read["is_subscribed"] = values["isSubscribed"]
        return read

    def _may_create_child(self, ctx: Context, account_id: str, parent_id: str | None) -> None:
        parent = None if parent_id is None else storage.get_mailbox(ctx.txn, account_id, parent_id)
        if not my_rights(ctx, account_id, parent)["mayCreateChild"]:
            where = "at the top level" if parent_id is None else f"in Mailbox {parent_id}"
            raise set_error("forbidden", f"you may not create Mailboxes {where}")

    def create(self, ctx: Context, account_id: str, obj: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
        if "name" not in obj:
            raise invalid_properties("a Mailbox needs a name", "name")
        response: dict[str, Any] = {}
        read = self._read(ctx, account_id, obj, response)
        values = {"parent_id": None, "role": None, "sort_order": 0, "is_subscribed": True, **read}
        self._may_create_child(ctx, account_id, values["parent_id"])
        owner = account_id == ctx.principal.account_id
        if "shareWith" in obj and not owner:
            raise set_error("forbidden", "only the owner may share a Mailbox")
        grants = check_share_with(ctx, account_id, obj.get("shareWith"))
        if not owner:
            # A Mailbox made by a sharee is shared as its parent is (or it
            # would vanish from their sight at once); it is the owner's,
            # so the owner's subscription stays as the default.
            assert values["parent_id"] is not None
            grants = storage.get_share_with(ctx.txn, account_id, [values["parent_id"]]).get(values["parent_id"], {})
            subscribe = values.pop("is_subscribed")
            values["is_subscribed"] = True
        if not extra.get("deferred"):
            limit = ctx.config.mailbox_max_total
            if storage.count_mailboxes(ctx.txn, account_id) >= limit:
                raise set_error("overQuota", f"an account may have at most {limit} Mailboxes")
            self._check_rules(ctx, account_id, Mailbox(id="#new", **values), _TREE_PROPERTIES, extra)
        mailbox = storage.add_mailbox(ctx.txn, account_id, **values)
        if extra.get("deferred"):
            self._check_rules(ctx, account_id, mailbox, _TREE_PROPERTIES, extra)
        if grants:
            change_share_with(ctx, account_id, mailbox, grants)
        if not owner:
            storage.set_subscribed(ctx.txn, account_id, mailbox.id, ctx.principal.account_id, subscribe)
            mailbox = attrs.evolve(mailbox, is_subscribed=subscribe)
            if subscribe:
                notification.dismiss(ctx.txn, ctx.principal.account_id, "Mailbox", account_id, mailbox.id)
        full = to_json(mailbox, my_rights(ctx, account_id, mailbox), grants if owner else None)
        defaults = {
            key: full[key] for key in ("parentId", "role", "sortOrder", "isSubscribed", "shareWith") if key not in obj
        }
        server = {key: full[key] for key in ("id", *COUNT_PROPERTIES, "myRights")}
        return {**server, **defaults, **response}

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
        stored = storage.get_mailbox(ctx.txn, account_id, object_id)
        assert stored is not None
        owner = account_id == ctx.principal.account_id
        response: dict[str, Any] = {}
        read = self._read(ctx, account_id, {key: new[key] for key in touched if key in new}, response)
        share_changed = "shareWith" in touched and new.get("shareWith") != current.get("shareWith")
        if share_changed:
            if not owner:
                raise set_error("forbidden", f"only the owner may change who Mailbox {object_id} is shared with")
            grants = check_share_with(ctx, account_id, new.get("shareWith"))
        if not owner and "is_subscribed" in read:
            # A sharee's subscription is their own, not the owner's.
            subscribe = read.pop("is_subscribed")
            if subscribe != current["isSubscribed"]:
                storage.set_subscribed(ctx.txn, account_id, object_id, ctx.principal.account_id, subscribe)
                storage.record_update(ctx.txn, account_id, object_id)
                if subscribe:
                    notification.dismiss(ctx.txn, ctx.principal.account_id, "Mailbox", account_id, object_id)
        mailbox = attrs.evolve(stored, **read)
        changed = {
            prop
            for prop, attribute in (
                ("name", "name"),
                ("parentId", "parent_id"),
                ("role", "role"),
                ("sortOrder", "sort_order"),
                ("isSubscribed", "is_subscribed"),
            )
            if getattr(mailbox, attribute) != getattr(stored, attribute)
        }
        if share_changed:
            change_share_with(ctx, account_id, mailbox, grants)
        if not changed:
            return response or None
        rights = my_rights(ctx, account_id, stored)
        if changed - {"isSubscribed"} and not rights["mayRename"]:
            raise set_error("forbidden", f"you may not rename or move Mailbox {object_id}")
        if "parentId" in changed:
            self._may_create_child(ctx, account_id, mailbox.parent_id)
        tree_changes = frozenset(changed & _TREE_PROPERTIES)
        if tree_changes:
            self._check_rules(ctx, account_id, mailbox, tree_changes, extra)
        storage.update_mailbox(ctx.txn, account_id, mailbox)
        return response or None

    def destroy(self, ctx: Context, account_id: str, object_id: str, extra: dict[str, Any]) -> None:
        mailbox = storage.get_mailbox(ctx.txn, account_id, object_id)
        assert mailbox is not None
        if not my_rights(ctx, account_id, mailbox)["mayDelete"]:
            raise set_error("forbidden", f"you may not destroy Mailbox {object_id}")
        if not extra.get("deferred") and storage.has_children(ctx.txn, account_id, object_id):
            raise set_error("mailboxHasChild", f"Mailbox {object_id} has child Mailboxes")
        remove_emails = bool(extra.get("onDestroyRemoveEmails"))
        if mailbox.total_emails > 0 and not remove_emails:
            raise set_error(
                "mailboxHasEmail",
                f"Mailbox {object_id} has {mailbox.total_emails} Emails; set onDestroyRemoveEmails to remove them",
            )
        # Everyone it was shared with saw it: they are told it is gone.
        seeing = principal_storage.grantees(ctx.txn, account_id, [object_id])
        storage.destroy_mailbox(ctx.txn, account_id, object_id, remove_emails)
        principal_storage.record_sight(
            ctx.txn, account_id, principal_storage.MAILBOX, seeing, [object_id],
            changelog.get_modseq(ctx.txn, account_id, storage.TYPE_NAME),
        )


# -- Mailbox/query -----------------------------------------------------------------------

_MAILBOX_CONDITIONS = frozenset({"parentId", "name", "role", "hasAnyRole", "isSubscribed"})
_MAILBOX_SORTS = frozenset({"sortOrder", "name"})


def parse_mailbox_filter(value: Any) -> Callable[[Mailbox], bool]:
    """
    A Mailbox/query filter (RFC 8621 section 2.3) as a predicate.

    @raise MethodError: unsupportedFilter for unknown conditions or
        operators, invalidArguments for values of the wrong type.
    """
    return filter_predicate(value, _mailbox_condition)


def _mailbox_condition(value: dict[str, Any]) -> Callable[[Mailbox], bool]:
    """
    One Mailbox/query FilterCondition as a predicate.
    """
    tests: list[Callable[[Mailbox], bool]] = []
    for name, wanted in value.items():
        if name not in _MAILBOX_CONDITIONS:
            raise MethodError("unsupportedFilter", f"Mailbox/query has no filter condition {name!r}")
        if name == "parentId":
            if wanted is not None and not is_id(wanted):
                raise invalid_arguments("filter: parentId must be a Mailbox id or null")
            tests.append(functools.partial(_attribute_is, "parent_id", wanted))
        elif name == "name":
            if not isinstance(wanted, str):
                raise invalid_arguments("filter: name must be a String")
            # "Contains", compared case-insensitively as text search is.
            folded = unicodedata.normalize("NFC", wanted).casefold()
            tests.append(functools.partial(_name_contains, folded))
        elif name == "role":
            if wanted is not None and not isinstance(wanted, str):
                raise invalid_arguments("filter: role must be a String or null")
            tests.append(functools.partial(_attribute_is, "role", wanted))
        else:
            if not isinstance(wanted, bool):
                raise invalid_arguments(f"filter: {name} must be a Boolean")
            if name == "hasAnyRole":
                tests.append(functools.partial(_has_role, wanted))
            else:
                tests.append(functools.partial(_attribute_is, "is_subscribed", wanted))
    return lambda mailbox: all(test(mailbox) for test in tests)


def _attribute_is(attribute: str, wanted: Any, mailbox: Mailbox) -> bool:
    return bool(getattr(mailbox, attribute) == wanted)


def _name_contains(folded: str, mailbox: Mailbox) -> bool:
    return folded in mailbox.name.casefold()


def _has_role(wanted: bool, mailbox: Mailbox) -> bool:
    return (mailbox.role is not None) == wanted


def _sort_order(mailbox: Mailbox) -> int:
    return mailbox.sort_order


def _name_key(key: Callable[[str], Any], mailbox: Mailbox) -> Any:
    return key(mailbox.name)


def _collation_key(collation: str) -> Callable[[str], Any]:
    from jmapd.storage.search import ascii_casemap, ascii_numeric, unicode_casemap

    return {
        "i;unicode-casemap": unicode_casemap,
        "i;ascii-casemap": ascii_casemap,
        "i;ascii-numeric": ascii_numeric,
    }[collation]


def parse_mailbox_sort(sort: list[dict[str, Any]]) -> list[tuple[Callable[[Mailbox], Any], bool]]:
    """
    The sort keys of Mailbox/query comparators: (key function, ascending).
    Without comparators: sortOrder, then name.
    """
    keys: list[tuple[Callable[[Mailbox], Any], bool]] = []
    for item in sort or [{"property": "sortOrder"}, {"property": "name"}]:
        name = item["property"]
        if name not in _MAILBOX_SORTS:
            raise MethodError("unsupportedSort", f"Mailboxes cannot be sorted by {name!r}")
        ascending, collation = comparator_order(item)
        if name == "sortOrder":
            keys.append((_sort_order, ascending))
        else:
            keys.append((functools.partial(_name_key, _collation_key(collation)), ascending))
    return keys


def query_mailboxes(
    found: list[Mailbox],
    test: Callable[[Mailbox], bool],
    keys: list[tuple[Callable[[Mailbox], Any], bool]],
    sort_as_tree: bool = False,
    filter_as_tree: bool = False,
) -> list[str]:
    """
    The ids of the Mailboxes that pass C{test}, sorted by C{keys} (ties
    by id); as a tree (RFC 8621 section 2.3) when asked: every Mailbox
    after its parent and siblings in order, and only Mailboxes whose
    ancestors pass the filter too.
    """
    by_id = {mailbox.id: mailbox for mailbox in found}

    def compare(a: Mailbox, b: Mailbox) -> int:
        for key, ascending in keys:
            x, y = key(a), key(b)
            if x != y:
                return (-1 if x < y else 1) * (1 if ascending else -1)
        return (a.id > b.id) - (a.id < b.id)

    def path(mailbox: Mailbox) -> list[Mailbox]:
        chain = [mailbox]
        while chain[-1].parent_id is not None and chain[-1].parent_id in by_id:
            chain.append(by_id[chain[-1].parent_id])
        return chain[::-1]

    def compare_tree(a: Mailbox, b: Mailbox) -> int:
        path_a, path_b = path(a), path(b)
        for x, y in zip(path_a, path_b, strict=False):
            if x.id != y.id:
                return compare(x, y)
        return len(path_a) - len(path_b)

    matching = {mailbox.id for mailbox in found if test(mailbox)}
    if filter_as_tree:
        matching = {m for m in matching if all(a.id in matching for a in path(by_id[m]))}
    chosen = [by_id[m] for m in matching]
    chosen.sort(key=functools.cmp_to_key(compare_tree if sort_as_tree else compare))
    return [mailbox.id for mailbox in chosen]


def register(registry: Registry) -> None:
    """
    Add Mailbox/get, /changes, /set, /query and /queryChanges.
    """
    register_standard_methods(registry, MailboxType())
