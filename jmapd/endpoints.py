# -*- test-case-name: tests.test_endpoints -*-
"""
The endpoint description string for the JMAP listener, built from the
configuration: C{tcp:port=8080:interface=127.0.0.1} or
C{ssl:port=8443:interface=\\:\\:1:privateKey=...:certKey=...}.

Colons and backslashes in values (IPv6 addresses, Windows-style or odd
paths) are escaped with L{quoteStringArgument}, so the string parses back
to exactly the configured values.

A certificate file that holds a chain (the server's certificate first,
then the intermediates, as certbot's C{fullchain.pem}) is also given as
C{extraCertChain}: C{certKey} loads only the first certificate, and a
server that sends no intermediates fails with every client that does not
happen to have them.  Twisted then sends the first certificate twice
(once as the server's, once at the head of the chain), which clients
accept (RFC 8446 section 4.4.2: receivers are prepared for extraneous
certificates).
"""

from __future__ import annotations

import re
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


def pem_certificates(pem: bytes) -> list[bytes]:
    """
    Each PEM certificate in C{pem}, in order (the server's first, then its
    chain).
    """
    return re.findall(rb"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", pem, re.DOTALL)


def _certificates_in(path: str) -> int:
    """
    How many PEM certificates the file at C{path} holds (0 when it cannot
    be read: the configuration checked it is readable, and Twisted then
    says what is wrong with it when it loads it).
    """
    try:
        with open(path, "rb") as f:
            return len(pem_certificates(f.read()))
    except OSError:
        return 0


def endpoint_string(bind_addr: str, port: int, cert_path: str | None, key_path: str | None) -> str:
    parts = [f"port={int(port)}"]
    interface = _interface(bind_addr or "")
    if interface:
        parts.append(f"interface={quoteStringArgument(interface)}")
    if cert_path and key_path:
        parts.append(f"privateKey={quoteStringArgument(key_path)}")
        parts.append(f"certKey={quoteStringArgument(cert_path)}")
        if _certificates_in(cert_path) > 1:
            parts.append(f"extraCertChain={quoteStringArgument(cert_path)}")
        return "ssl:" + ":".join(parts)
    return "tcp:" + ":".join(parts)
