# -*- test-case-name: tests.protocol.test_core -*-
"""
The Core capability (RFC 8620 section 2) and its methods: Core/echo and
Blob/copy.
"""

from __future__ import annotations

from typing import Any

from jmapd.protocol.arguments import Arguments, is_id
from jmapd.protocol.engine import CORE, Capability, Context, Registry
from jmapd.protocol.errors import invalid_arguments
from jmapd.storage import blobs as blob_storage

COLLATIONS = ("i;ascii-numeric", "i;ascii-casemap", "i;unicode-casemap")


def core_capability(env: Any) -> dict[str, Any]:
    """
    The Core capability object: every limit comes from the configuration.
    """
    config = env.config
    return {
        "maxSizeUpload": config.max_size_upload,
        "maxConcurrentUpload": config.max_concurrent_uploads,
        "maxSizeRequest": config.max_size_request,
        "maxConcurrentRequests": config.max_concurrent_requests,
        "maxCallsInRequest": config.max_calls_in_request,
        "maxObjectsInGet": config.max_objects_in_get,
        "maxObjectsInSet": config.max_objects_in_set,
        "collationAlgorithms": list(COLLATIONS),
    }


def echo(ctx: Context, arguments: dict[str, Any]) -> dict[str, Any]:
    """
    Core/echo returns its arguments unchanged (RFC 8620 section 4).
    """
    return arguments


def blob_copy(ctx: Context, arguments: dict[str, Any]) -> dict[str, Any]:
    """
    Blob/copy (RFC 8620 section 6.3): give another account access to blobs
    of this one.  The bytes are content-addressed, so nothing is copied but
    the access.
    """
    args = Arguments(arguments, ctx.method)
    from_account_id = args.id("fromAccountId")
    account_id = args.id("accountId")
    blob_ids = args.id_list("blobIds", required=True, nullable=False, allow_creation_refs=False)
    args.done()
    if from_account_id == account_id:
        raise invalid_arguments("fromAccountId and accountId must differ")
    ctx.from_account(from_account_id, CORE)
    ctx.account(account_id, CORE, write=True)
    copied: dict[str, str] = {}
    not_copied: dict[str, Any] = {}
    expires_at = ctx.now + ctx.config.blob_temp_ttl
    for blob_id in blob_ids:
        if not is_id(blob_id) or not ctx.env.registry.may_read_blob(ctx, from_account_id, blob_id):
            # In a shared account only blobs of Emails the principal may
            # read exist for it.  RFC 8620 section 6.3: a blob that cannot
            # be found is the notFound SetError.
            not_copied[blob_id] = {"type": "notFound", "description": f"no blob {blob_id!r} in {from_account_id}"}
            continue
        record = blob_storage.get_blob(ctx.txn, from_account_id, blob_id)
        if record is not None:
            # Nothing in the target account references the copy yet, so it
            # expires like an upload unless something starts using it.
            blob_storage.add_blob(ctx.txn, account_id, blob_id, record.size, record.type, ctx.now, expires_at)
            _grant(ctx, account_id, blob_id)
            copied[blob_id] = blob_id
            continue
        data = ctx.env.registry.resolve_blob(ctx.env, ctx.txn, from_account_id, blob_id)
        if data is None:
            not_copied[blob_id] = {"type": "notFound", "description": f"no blob {blob_id!r} in {from_account_id}"}
            continue
        # A derived blob (a body part) becomes a blob of its own.
        new_blob_id = ctx.env.blobs.put(data)
        blob_storage.add_blob(
            ctx.txn, account_id, new_blob_id, len(data), "application/octet-stream", ctx.now, expires_at
        )
        _grant(ctx, account_id, new_blob_id)
        copied[blob_id] = new_blob_id
    return {
        "fromAccountId": from_account_id,
        "accountId": account_id,
        "copied": copied or None,
        "notCopied": not_copied or None,
    }


def _grant(ctx: Context, account_id: str, blob_id: str) -> None:
    """
    A blob copied into an account shared with the principal stays theirs
    to use there (L{blob_storage.grant_blob}).
    """
    if account_id != ctx.principal.account_id:
        blob_storage.grant_blob(ctx.txn, account_id, blob_id, ctx.principal.account_id)


def put_there(ctx: Context, account_id: str, blob_id: str) -> bool:
    """
    The blob access check of Core: a principal reads, in an account shared
    with them, the blobs they uploaded or copied there themselves.
    """
    return blob_storage.granted(ctx.txn, account_id, blob_id, ctx.principal.account_id)


def register(registry: Registry) -> None:
    registry.add_capability(Capability(CORE, core_capability))
    registry.add_method("Core/echo", CORE, echo, pure=True)
    registry.add_method("Blob/copy", CORE, blob_copy, write=True)
    registry.blob_access_checks.append(put_there)
