# -*- test-case-name: tests.web.test_session -*-
"""
The Session object (RFC 8620 section 2): what the server can do, which
accounts the user may use, and where the API lives.
"""

from __future__ import annotations

import hashlib
from typing import Any

import orjson

from jmapd.protocol.engine import Principal


def urls(jmap_url: str) -> dict[str, str]:
    """
    The absolute URLs (and URL templates, RFC 6570 level 1) built from
    C{jmap-url}.
    """
    base = jmap_url.rstrip("/")
    return {
        "apiUrl": f"{base}/jmap/",
        "downloadUrl": f"{base}/jmap/download/{{accountId}}/{{blobId}}/{{name}}?accept={{type}}",
        "uploadUrl": f"{base}/jmap/upload/{{accountId}}/",
        "eventSourceUrl": f"{base}/jmap/eventsource/?types={{types}}&closeafter={{closeafter}}&ping={{ping}}",
    }


def build_session(env: Any, txn: Any, principal: Principal) -> dict[str, Any]:
    """
    The Session for C{principal}; its C{state} is a digest of everything
    else in it, so it changes exactly when the Session does.
    """
    registry = env.registry
    capabilities = {
        urn: capability.session(env)
        for urn, capability in registry.capabilities.items()
        if capability.in_session
    }
    accounts: dict[str, Any] = {}
    primary: dict[str, str] = {}
    for account_id, access in sorted(registry.accounts(env, txn, principal).items()):
        account_capabilities = {}
        for urn in sorted(access.capabilities):
            capability = registry.capabilities.get(urn)
            if capability is not None and (capability.account is not None or capability.account_for is not None):
                account_capabilities[urn] = capability.account_value(env, txn, account_id, principal)
        accounts[account_id] = {
            "name": access.name,
            "isPersonal": access.is_personal,
            "isReadOnly": access.is_read_only,
            "accountCapabilities": account_capabilities,
        }
        if access.is_personal:
            for urn in account_capabilities:
                primary.setdefault(urn, account_id)
    session: dict[str, Any] = {
        "capabilities": capabilities,
        "accounts": accounts,
        "primaryAccounts": primary,
        "username": principal.name,
        **urls(env.config.jmap_url),
    }
    digest = hashlib.sha256(orjson.dumps(session, option=orjson.OPT_SORT_KEYS)).hexdigest()
    session["state"] = digest[:16]
    return session


def session_state(env: Any, txn: Any, principal: Principal) -> str:
    return str(build_session(env, txn, principal)["state"])
