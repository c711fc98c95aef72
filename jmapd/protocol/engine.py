# -*- test-case-name: tests.protocol.test_engine -*-
"""
The JMAP engine: run the method calls of one Request in one transaction.

This module knows nothing of HTTP.  The web API, the WebSocket transport and
internal callers all hand a parsed L{Request} and an authenticated
L{Principal} to L{execute}, in a worker thread inside a transaction, and get
the Response object back (RFC 8620 section 3.4).

Each method call runs inside a savepoint: a method that fails leaves no
trace, and one that succeeds is committed with the rest of the request.
"""

from __future__ import annotations

import time
import traceback
from collections.abc import Callable, Iterable
from typing import Any

from attrs import define, field, frozen
from twisted.logger import Logger

from jmapd.protocol.errors import MethodError
from jmapd.protocol.pointer import PointerError, evaluate
from jmapd.protocol.request import Request
from jmapd.storage.ids import new_id

log = Logger()

CORE = "urn:ietf:params:jmap:core"


#: The errors for the account a /copy reads from (RFC 8620 sections 5.4
#: and 6.3), by the error L{Context.account} gives.
_FROM_ACCOUNT_ERRORS = {
    "accountNotFound": "fromAccountNotFound",
    "accountNotSupportedByMethod": "fromAccountNotSupportedByMethod",
}


@frozen
class Principal:
    """
    Who is making the request: the authenticated account, and the
    credential it authenticated with (L{jmapd.storage.accounts}: its
    password or one of its tokens), which PushSubscriptions belong to
    (RFC 8620 section 7.2); C{None} for callers that did not authenticate
    (the push delivery's own followers), which have no PushSubscriptions.
    """

    account_id: str
    name: str
    credential: str | None = None


@frozen
class Capability:
    """
    A capability the server implements.

    @ivar session: C{session(env) -> dict}: its value in the Session's
        C{capabilities}.
    @ivar account: C{account(env, txn, account_id) -> dict | None}: its value
        in an account's C{accountCapabilities}, or C{None} when the
        capability is not an account capability (Core, WebSocket).
    """

    urn: str
    session: Callable[[Any], dict[str, Any]]
    account: Callable[[Any, Any, str], dict[str, Any]] | None = None
    #: C{account_for(env, txn, account_id, principal) -> dict}: the value
    #: when it depends on who asks (the Principals capability's
    #: currentUserPrincipalId); used by L{account_value} instead of
    #: C{account}.
    account_for: Callable[[Any, Any, str, Principal], dict[str, Any]] | None = None
    #: Whether it appears in the Session's C{capabilities}; some are account
    #: capabilities only (RFC 9670: C{urn:ietf:params:jmap:principals:owner}).
    in_session: bool = True

    def account_value(self, env: Any, txn: Any, account_id: str, principal: Principal) -> dict[str, Any]:
        """
        The capability's value in C{accountCapabilities} of an account as
        C{principal} sees it.
        """
        if self.account_for is not None:
            return self.account_for(env, txn, account_id, principal)
        assert self.account is not None
        return self.account(env, txn, account_id)


@frozen
class Method:
    name: str
    capability: str
    handler: Callable[[Context, dict[str, Any]], Any]
    write: bool
    #: The method reads and writes no stored data (Core/echo), so a
    #: request made only of such calls may run without a transaction.
    pure: bool = False


@frozen
class AccountAccess:
    """
    An account as the principal may use it.
    """

    account_id: str
    name: str
    is_personal: bool
    is_read_only: bool
    capabilities: frozenset[str]
    #: Whether the Session lists the account and push reports its changes:
    #: a shared account only while the user subscribes to some of it
    #: (RFC 9670 section 1.4); methods may use it either way.
    listed: bool = True


class Registry:
    """
    Every capability and method this server implements.  Data type modules
    add themselves with C{register(registry)}; nothing is advertised or
    callable unless it is registered.
    """

    def __init__(self) -> None:
        self.capabilities: dict[str, Capability] = {}
        self.methods: dict[str, Method] = {}
        self.account_lookups: list[Callable[[Any, Any, Principal], Iterable[AccountAccess]]] = []
        #: C{resolver(txn, env, account_id, blob_id) -> bytes | None}: blobs
        #: that are not stored as files of their own, such as the body parts
        #: of a message (Mail adds one); tried when the blobs table has no row.
        self.blob_resolvers: list[Callable[[Any, Any, str, str], bytes | None]] = []
        #: C{check(ctx, account_id, blob_id) -> bool}: whether the
        #: principal may read a blob of an account that is not their own
        #: (sharing adds one: blobs of Emails they may read); without any,
        #: no blob of another account is readable.
        self.blob_access_checks: list[Callable[[Context, str, str], bool]] = []

    def add_capability(self, capability: Capability) -> None:
        self.capabilities[capability.urn] = capability

    def add_method(
        self,
        name: str,
        capability: str,
        handler: Callable[[Context, dict[str, Any]], Any],
        write: bool = False,
        pure: bool = False,
    ) -> None:
        self.methods[name] = Method(name, capability, handler, write, pure)

    def method(self, name: str, capability: str, write: bool = False) -> Callable[[Any], Any]:
        def decorate(handler: Any) -> Any:
            self.add_method(name, capability, handler, write)
            return handler

        return decorate

    def resolve_blob(self, env: Any, txn: Any, account_id: str, blob_id: str) -> bytes | None:
        """
        The octets of a derived blob (see L{blob_resolvers}), or C{None}.
        """
        for resolver in self.blob_resolvers:
            data = resolver(txn, env, account_id, blob_id)
            if data is not None:
                return data
        return None

    def is_write(self, request: Request) -> bool:
        """
        Whether the request may change data, so that it needs a write
        transaction from the start.
        """
        for call in request.method_calls:
            method = self.methods.get(call.name)
            if method is not None and method.write:
                return True
        return False

    def is_pure(self, request: Request) -> bool:
        """
        Whether every method call of the request is a L{Method.pure} one
        (or an unknown method, answered without data), so that the
        request needs no database transaction.
        """
        for call in request.method_calls:
            method = self.methods.get(call.name)
            if method is not None and not method.pure:
                return False
        return True

    def may_read_blob(self, ctx: Context, account_id: str, blob_id: str) -> bool:
        """
        Whether the principal may read C{blob_id} of C{account_id} (an
        account C{ctx.account} allowed): everything of their own account;
        of another what a L{blob_access_checks} allows.
        """
        if account_id == ctx.principal.account_id:
            return True
        return any(check(ctx, account_id, blob_id) for check in self.blob_access_checks)

    def accounts(
        self, env: Any, txn: Any, principal: Principal, unlisted: bool = False
    ) -> dict[str, AccountAccess]:
        """
        The accounts the principal may use, by accountId: its own, plus
        what the registered lookups (sharing) add; those the Session does
        not list (see L{AccountAccess.listed}) only with C{unlisted}.
        """
        own_capabilities = frozenset(
            urn for urn, capability in self.capabilities.items() if capability.account is not None
        )
        found = {
            principal.account_id: AccountAccess(
                principal.account_id, principal.name, True, False, own_capabilities
            )
        }
        for lookup in self.account_lookups:
            for access in lookup(env, txn, principal):
                if access.listed or unlisted:
                    found.setdefault(access.account_id, access)
        return found


class ResponseList(list):  # type: ignore[type-arg]
    """
    What a method returns when it produces more than one response (for
    example Email/copy followed by an implicit Email/set): a list of
    C{(name, arguments)}.
    """


@define
class Context:
    """
    What a method implementation may use: the transaction, the server
    environment, the principal and the request-wide state.
    """

    txn: Any
    env: Any
    principal: Principal
    using: frozenset[str]
    created_ids: dict[str, str]
    method: str = ""
    call_id: str = ""
    _accounts: dict[str, AccountAccess] | None = field(default=None)

    @property
    def now(self) -> float:
        return float(self.env.clock.seconds())

    @property
    def config(self) -> Any:
        return self.env.config

    def accounts(self) -> dict[str, AccountAccess]:
        if self._accounts is None:
            self._accounts = self.env.registry.accounts(self.env, self.txn, self.principal, unlisted=True)
        return self._accounts

    def account(self, account_id: Any, capability: str, write: bool = False) -> AccountAccess:
        """
        The account a method works on, checked as RFC 8620 section 3.6.2
        requires.

        @raise MethodError: accountNotFound, accountNotSupportedByMethod or
            accountReadOnly.
        """
        access = self.accounts().get(account_id) if isinstance(account_id, str) else None
        if access is None:
            raise MethodError("accountNotFound", f"no account with id {account_id!r} is available")
        if capability != CORE and capability not in access.capabilities:
            raise MethodError(
                "accountNotSupportedByMethod",
                f"the account {account_id!r} does not support {capability}",
            )
        if write and access.is_read_only:
            raise MethodError("accountReadOnly", f"the account {account_id!r} is read-only")
        if write:
            # Before the method reads what it will change: other nodes
            # writing this account wait until this request commits.
            self.txn.lock_account(account_id)
        return access

    def from_account(self, account_id: Any, capability: str, write: bool = False) -> AccountAccess:
        """
        The account a /copy reads from: checked as L{account} does, but
        with the errors RFC 8620 gives /copy (section 5.4) and Blob/copy
        (section 6.3) for it, so the client can tell which of the two
        accounts is wrong.

        @raise MethodError: fromAccountNotFound,
            fromAccountNotSupportedByMethod or accountReadOnly.
        """
        try:
            return self.account(account_id, capability, write=write)
        except MethodError as e:
            renamed = _FROM_ACCOUNT_ERRORS.get(e.type)
            if renamed is None:
                raise
            raise MethodError(renamed, e.description) from None

    def resolve_id(self, value: str) -> str | None:
        """
        An id, or a C{#creationId} resolved through the ids created so far
        in this request (RFC 8620 section 5.3); C{None} when unknown.
        """
        if value.startswith("#"):
            return self.created_ids.get(value[1:])
        return value


def resolve_references(arguments: dict[str, Any], responses: list[list[Any]]) -> dict[str, Any]:
    """
    Replace every C{#name} argument holding a ResultReference by the value
    it points to (RFC 8620 section 3.7).

    @raise MethodError: invalidArguments when both C{name} and C{#name} are
        given; invalidResultReference when a reference does not resolve.
    """
    if not any(key.startswith("#") for key in arguments):
        return arguments
    resolved = {}
    for key, value in arguments.items():
        if not key.startswith("#"):
            resolved[key] = value
            continue
        name = key[1:]
        if name in arguments:
            raise MethodError("invalidArguments", f"both '{name}' and '#{name}' are given")
        if (
            not isinstance(value, dict)
            or set(value) != {"resultOf", "name", "path"}
            or not all(isinstance(v, str) for v in value.values())
        ):
            raise MethodError(
                "invalidResultReference", f"'#{name}' must be a ResultReference with resultOf, name and path"
            )
        # RFC 8620 section 3.7: the FIRST response with that method call id,
        # and it must have the expected name.
        first = next((r for r in responses if r[2] == value["resultOf"]), None)
        if first is None:
            raise MethodError(
                "invalidResultReference",
                f"'#{name}': no earlier response has the method call id {value['resultOf']!r}",
            )
        if first[0] != value["name"]:
            raise MethodError(
                "invalidResultReference",
                f"'#{name}': the response to {value['resultOf']!r} is {first[0]!r}, not {value['name']!r}",
            )
        try:
            resolved[name] = evaluate(first[1], value["path"])
        except PointerError as e:
            raise MethodError("invalidResultReference", f"'#{name}': {e}") from None
    return resolved


def execute(txn: Any, env: Any, principal: Principal, request: Request, session_state: str) -> dict[str, Any]:
    """
    Run every method call of C{request} in order and return the Response
    object.  Runs in a worker thread inside C{txn}.
    """
    registry: Registry = env.registry
    responses: list[list[Any]] = []
    created_ids: dict[str, str] = dict(request.created_ids or {})
    ctx = Context(txn, env, principal, request.using, created_ids)
    for call in request.method_calls:
        started = time.perf_counter() if env.trace else 0.0
        method = registry.methods.get(call.name)
        if method is None or method.capability not in request.using:
            detail = (
                f"unknown method {call.name!r}"
                if method is None
                else f"{call.name} needs {method.capability!r} in 'using'"
            )
            responses.append(["error", {"type": "unknownMethod", "description": detail}, call.call_id])
            if env.trace:
                log.debug(
                    "{method} {call_id} for {account}: unknownMethod",
                    method=call.name,
                    call_id=call.call_id,
                    account=principal.name,
                )
            continue
        ctx.method = call.name
        ctx.call_id = call.call_id
        try:
            arguments = resolve_references(call.arguments, responses)
            with txn.savepoint():
                result = method.handler(ctx, arguments)
        except MethodError as e:
            responses.append(["error", e.arguments(), call.call_id])
        except Exception:
            error_id = new_id("e", 10)
            log.error(
                "serverFail {error_id} in {method} for {account}:\n{traceback}",
                error_id=error_id,
                method=call.name,
                account=principal.name,
                traceback=traceback.format_exc(),
            )
            responses.append(
                [
                    "error",
                    {"type": "serverFail", "description": f"internal error {error_id}; see the server log"},
                    call.call_id,
                ]
            )
        else:
            if isinstance(result, ResponseList):
                for name, args in result:
                    responses.append([name, args, call.call_id])
            else:
                responses.append([call.name, result, call.call_id])
        if env.trace:
            log.debug(
                "{method} {call_id} for {account}: {outcome} in {ms:.1f} ms",
                method=call.name,
                call_id=call.call_id,
                account=principal.name,
                outcome=responses[-1][0],
                ms=(time.perf_counter() - started) * 1000,
            )
    response: dict[str, Any] = {"methodResponses": responses, "sessionState": session_state}
    if request.created_ids is not None:
        response["createdIds"] = created_ids
    return response
