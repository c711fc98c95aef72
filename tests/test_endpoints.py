"""
Tests for L{jmapd.endpoints}: the configuration becomes an endpoint string
that Twisted parses back to exactly the configured address, port and files.
"""

from __future__ import annotations

import datetime
import ipaddress
import os

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from twisted.internet import endpoints
from twisted.internet.protocol import Factory
from twisted.internet.testing import MemoryReactor
from twisted.trial.unittest import SynchronousTestCase

from jmapd.config import default_config
from jmapd.endpoints import endpoint_string, jmap_endpoint


def make_certificate(directory: str) -> tuple[str, str]:
    """
    Write a self-signed certificate for C{localhost} and C{127.0.0.1}
    (both in subjectAltName, which service_identity checks) and its
    private key as PEM files in C{directory}, created if needed.

    @return: (certificate path, key path).
    """
    os.makedirs(directory, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path = os.path.join(directory, "cert.pem")
    key_path = os.path.join(directory, "key.pem")
    with open(cert_path, "wb") as f:
        f.write(certificate.public_bytes(serialization.Encoding.PEM))
    with open(key_path, "wb") as f:
        f.write(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
    return cert_path, key_path


class EndpointStringTests(SynchronousTestCase):
    """
    The strings L{endpoint_string} and L{jmap_endpoint} build.
    """

    def test_tcpWithInterface(self) -> None:
        """
        Without a certificate the endpoint is C{tcp:} with the port and the
        bind address as its interface.
        """
        self.assertEqual(
            endpoint_string("127.0.0.1", 8080, None, None), "tcp:port=8080:interface=127.0.0.1"
        )

    def test_tcpAllInterfaces(self) -> None:
        """
        An empty bind address (all interfaces) gives no C{interface}
        argument at all, rather than an empty one.
        """
        self.assertEqual(endpoint_string("", 8080, None, None), "tcp:port=8080")

    def test_ipv6Quoted(self) -> None:
        """
        The colons of an IPv6 bind address are escaped, so they do not end
        the argument.
        """
        self.assertEqual(
            endpoint_string("::1", 8443, None, None), "tcp:port=8443:interface=\\:\\:1"
        )

    def test_certificateWithoutKeyIsTCP(self) -> None:
        """
        TLS needs both files; with only one the listener is plain TCP (the
        configuration refuses that combination before it gets here).
        """
        self.assertEqual(endpoint_string("", 80, "/c.pem", None), "tcp:port=80")
        self.assertEqual(endpoint_string("", 80, None, "/k.pem"), "tcp:port=80")

    def test_sslQuotesPaths(self) -> None:
        """
        With a certificate and a key the endpoint is C{ssl:}; C{privateKey}
        is the key, C{certKey} the certificate, and colons and backslashes
        in their paths are escaped.
        """
        self.assertEqual(
            endpoint_string("", 8443, "/etc/a:b/cert.pem", "/etc/a\\b/key.pem"),
            "ssl:port=8443:privateKey=/etc/a\\\\b/key.pem:certKey=/etc/a\\:b/cert.pem",
        )

    def test_fromConfig(self) -> None:
        """
        L{jmap_endpoint} reads jmap-bind-addr and jmap-port from the
        configuration.
        """
        config = default_config(jmap_bind_addr="::1", jmap_port=8081)
        self.assertEqual(jmap_endpoint(config), "tcp:port=8081:interface=\\:\\:1")


class RoundTripTests(SynchronousTestCase):
    """
    What Twisted makes of the strings: the listener gets exactly the
    configured values, however odd the characters in them.
    """

    def listen(self, description: str) -> MemoryReactor:
        """
        Parse C{description} with L{endpoints.serverFromString} and listen
        on a L{MemoryReactor}, which records the call.
        """
        reactor = MemoryReactor()
        endpoint = endpoints.serverFromString(reactor, description)
        self.successResultOf(endpoint.listen(Factory()))
        return reactor

    def test_tcpRoundTrip(self) -> None:
        """
        A TCP string parses back to the port and the interface.
        """
        description = jmap_endpoint(default_config(jmap_bind_addr="127.0.0.1", jmap_port=8080))
        self.assertEqual(endpoints._parseServer(description, None)[:2], ("TCP", (8080, None)))
        reactor = self.listen(description)
        [(port, _factory, _backlog, interface)] = reactor.tcpServers
        self.assertEqual((port, interface), (8080, "127.0.0.1"))

    def test_allInterfacesRoundTrip(self) -> None:
        """
        Without a bind address Twisted listens on its default, every IPv4
        interface.
        """
        reactor = self.listen(jmap_endpoint(default_config(jmap_bind_addr="", jmap_port=8080)))
        [(port, _factory, _backlog, interface)] = reactor.tcpServers
        self.assertEqual((port, interface), (8080, ""))

    def test_ipv6RoundTrip(self) -> None:
        """
        An IPv6 bind address comes back whole, colons and all.
        """
        reactor = self.listen(jmap_endpoint(default_config(jmap_bind_addr="::1", jmap_port=8080)))
        [(port, _factory, _backlog, interface)] = reactor.tcpServers
        self.assertEqual((port, interface), (8080, "::1"))

    def test_sslRoundTrip(self) -> None:
        """
        A TLS string parses back to the exact certificate and key paths
        (here in a directory whose name has a colon and a backslash), and
        Twisted can load the files from them.
        """
        directory = os.path.join(os.path.abspath(self.mktemp()), "odd:dir\\name")
        cert_path, key_path = make_certificate(directory)
        config = default_config(
            jmap_bind_addr="::1", jmap_port=8443, jmap_cert_path=cert_path, jmap_key_path=key_path
        )
        description = jmap_endpoint(config)
        args, kwargs = endpoints._parse(description)
        self.assertEqual(args, ["ssl"])
        self.assertEqual(
            kwargs,
            {"port": "8443", "interface": "::1", "privateKey": key_path, "certKey": cert_path},
        )
        reactor = self.listen(description)
        [(port, _factory, context_factory, _backlog, interface)] = reactor.sslServers
        self.assertEqual((port, interface), (8443, "::1"))
        self.assertIsNotNone(context_factory.getContext())
