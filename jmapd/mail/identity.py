# -*- test-case-name: tests.mail.test_identity -*-
"""
The Identity data type (RFC 8621 section 6): Identity/get, /changes and
/set, under the C{urn:ietf:params:jmap:submission} capability.

Each address of the account has a default Identity the server keeps (see
L{jmapd.storage.identities}); the user may add more Identities for the
same addresses (with another name or signature) and delete those, but may
not create one for an address the account does not have (forbiddenFrom),
nor a wildcard one (C{*@domain}, which RFC 8621 section 6 lets a server
offer; jmapd has no accounts owning a whole domain).  The Identities
follow the account's addresses in the transaction that changes those
(L{jmapd.storage.identities.sync_identities}), so /get and /changes only
read.
"""

from __future__ import annotations

from typing import Any

from jmapd.protocol.engine import Capability, Context, Registry
from jmapd.protocol.errors import invalid_properties, set_error
from jmapd.protocol.standard import DataType, register_standard_methods
from jmapd.storage import identities as storage
from jmapd.submission import SUBMISSION, is_address, sending_enabled

PROPERTIES = ("id", "name", "email", "replyTo", "bcc", "textSignature", "htmlSignature", "mayDelete")


def check_email_addresses(name: str, value: Any) -> list[dict[str, Any]] | None:
    """
    An C{EmailAddress[]|null} value (RFC 8621 section 4.1.2.3), checked.

    @raise SetErrorException: invalidProperties naming C{name}.
    """
    if value is None:
        return None
    if not isinstance(value, list):
        raise invalid_properties(f"{name} must be an array of EmailAddress objects or null", name)
    checked = []
    for item in value:
        if (
            not isinstance(item, dict)
            or not set(item) <= {"name", "email"}
            or not isinstance(item.get("email"), str)
            or not (item.get("name") is None or isinstance(item.get("name"), str))
        ):
            raise invalid_properties(
                f"{name} must hold EmailAddress objects with 'email' (a String) and 'name' (a String or null)", name
            )
        if not is_address(item["email"]):
            raise invalid_properties(f"{name}: {item['email']!r} is not an email address", name)
        checked.append({"name": item.get("name"), "email": item["email"]})
    return checked


def _check_string(name: str, value: Any) -> str:
    if not isinstance(value, str):
        raise invalid_properties(f"{name} must be a String", name)
    return value


def check_values(obj: dict[str, Any], names: Any) -> dict[str, Any]:
    """
    The settable Identity properties among C{names}, checked.
    """
    values: dict[str, Any] = {}
    for name in names:
        if name in ("name", "textSignature", "htmlSignature"):
            values[name] = _check_string(name, obj[name])
        elif name in ("replyTo", "bcc"):
            values[name] = check_email_addresses(name, obj[name])
    return values


def _render(identity: storage.Identity) -> dict[str, Any]:
    return {
        "id": identity.id,
        "name": identity.name,
        "email": identity.email,
        "replyTo": identity.reply_to,
        "bcc": identity.bcc,
        "textSignature": identity.text_signature,
        "htmlSignature": identity.html_signature,
        "mayDelete": not identity.is_default,
    }


class IdentityType(DataType):
    name = "Identity"
    capability = SUBMISSION
    properties = PROPERTIES
    server_set = frozenset({"id", "mayDelete"})
    immutable = frozenset({"email"})
    methods = ("get", "changes", "set")

    def count(self, ctx: Context, account_id: str) -> int:
        return storage.count_identities(ctx.txn, account_id)

    def fetch(
        self, ctx: Context, account_id: str, ids: list[str] | None, properties: frozenset[str], extra: dict[str, Any]
    ) -> list[dict[str, Any]]:
        return [_render(identity) for identity in storage.get_identities(ctx.txn, account_id, ids)]

    def create(self, ctx: Context, account_id: str, obj: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
        email = obj.get("email")
        if not isinstance(email, str):
            raise invalid_properties("email is required (a String)", "email")
        if email.lower() not in storage.account_addresses(ctx.txn, account_id):
            raise set_error("forbiddenFrom", f"this account cannot send from {email!r}")
        values = check_values(obj, [name for name in obj if name != "email"])
        values["email"] = email
        identity_id = storage.add_identity(ctx.txn, account_id, values)
        created = storage.get_identities(ctx.txn, account_id, [identity_id])[0]
        rendered = _render(created)
        return {name: value for name, value in rendered.items() if name not in obj}

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
        values = check_values(new, sorted(touched))
        storage.update_identity(ctx.txn, account_id, object_id, values)
        return None

    def destroy(self, ctx: Context, account_id: str, object_id: str, extra: dict[str, Any]) -> None:
        found = storage.get_identities(ctx.txn, account_id, [object_id])
        if not found:
            raise set_error("notFound", f"no Identity {object_id!r}")
        if found[0].is_default:
            raise set_error(
                "forbidden", f"the Identity of the account's address {found[0].email} cannot be destroyed"
            )
        storage.destroy_identity(ctx.txn, account_id, object_id)


IDENTITY_TYPE = IdentityType()


def submission_account_capability(env: Any, txn: Any, account_id: str) -> dict[str, Any]:
    """
    The submission capability of an account (RFC 8621 section 1.3.2).

    FUTURERELEASE (RFC 4865) is done here, not by the relay: the
    C{HOLDFOR}/C{HOLDUNTIL} parameters of the envelope's mailFrom set
    sendAt.  Its EHLO arguments would be the longest interval and the
    latest date-time; only the interval is given, since a date-time would
    change the Session every second.
    """
    config = env.config
    max_delay = int(config.submission_max_delayed_send)
    extensions: dict[str, list[str]] = {"SIZE": [str(config.mail_max_size)]}
    if max_delay > 0:
        extensions["FUTURERELEASE"] = [str(max_delay)]
    return {"maxDelayedSend": max_delay, "submissionExtensions": extensions}


def add_capability(registry: Registry) -> None:
    registry.add_capability(Capability(SUBMISSION, lambda env: {}, submission_account_capability))


def register(registry: Registry, config: Any) -> None:
    """
    Add the submission capability and Identity/get, /changes and /set,
    when sending is on (C{smtp-relay-host} is set).
    """
    if not sending_enabled(config):
        return
    add_capability(registry)
    # The default Identities follow the addresses when those change
    # (jmapd.storage.identities): /get and /changes only read.
    register_standard_methods(registry, IDENTITY_TYPE)
