# -*- test-case-name: tests.test_endpoints -*-
"""
The endpoint description string for the JMAP listener, built from the
configuration: C{tcp:port=8080:interface=127.0.0.1} or
C{ssl:port=8443:interface=\\:\\:1:privateKey=...:certKey=...}.

Colons and backslashes in values (IPv6 addresses, Windows-style or odd
paths) are escaped with L{quoteStringArgument}, so the string parses back
to exactly the configured values.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.endpoints import quoteStringArgument


def _interface(bind_addr: str) -> str:
    address = bind_addr.strip()
    if address.startswith("[") and address.endswith("]"):
        address = address[1:-1]
    return address


def jmap_endpoint(config: Any) -> str:
    """
    The server endpoint string for C{jmap-bind-addr}, C{jmap-port} and,
    when both are set, C{jmap-cert-path} and C{jmap-key-path}.
    """
    return endpoint_string(
        config.jmap_bind_addr, config.jmap_port, config.jmap_cert_path, config.jmap_key_path
    )


def endpoint_string(bind_addr: str, port: int, cert_path: str | None, key_path: str | None) -> str:
    parts = [f"port={int(port)}"]
    interface = _interface(bind_addr or "")
    if interface:
        parts.append(f"interface={quoteStringArgument(interface)}")
    if cert_path and key_path:
        parts.append(f"privateKey={quoteStringArgument(key_path)}")
        parts.append(f"certKey={quoteStringArgument(cert_path)}")
        return "ssl:" + ":".join(parts)
    return "tcp:" + ":".join(parts)
