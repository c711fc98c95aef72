"""
Tests for L{jmapd.endpoints}: the configuration becomes an endpoint string
that Twisted parses back to exactly the configured address, port and files.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from OpenSSL import SSL
from twisted.internet import endpoints, ssl
from twisted.internet.defer import Deferred
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.testing import MemoryReactor
from twisted.trial.unittest import SynchronousTestCase, TestCase

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


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def make_chain(directory: str) -> tuple[bytes, str, str]:
    """
    Write a certificate for C{localhost} signed by an intermediate CA
    signed by a root CA, as certbot does: the server's certificate then
    the intermediate in one file (C{fullchain.pem}), and its key.

    @return: (the root's PEM, the chain file's path, the key's path).
    """
    os.makedirs(directory, exist_ok=True)
    now = datetime.datetime.now(datetime.UTC)

    def issue(subject: str, key: Any, issuer: str, issuer_key: Any, ca: bool) -> x509.Certificate:
        builder = (
            x509.CertificateBuilder()
            .subject_name(_name(subject))
            .issuer_name(_name(issuer))
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        )
        if not ca:
            builder = builder.add_extension(
                x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False
            )
        return builder.sign(issuer_key, hashes.SHA256())

    root_key, middle_key, leaf_key = (ec.generate_private_key(ec.SECP256R1()) for _ in range(3))
    root = issue("Test Root", root_key, "Test Root", root_key, True)
    middle = issue("Test Intermediate", middle_key, "Test Root", root_key, True)
    leaf = issue("localhost", leaf_key, "Test Intermediate", middle_key, False)
    chain_path = os.path.join(directory, "fullchain.pem")
    key_path = os.path.join(directory, "key.pem")
    with open(chain_path, "wb") as f:
        f.write(leaf.public_bytes(serialization.Encoding.PEM) + middle.public_bytes(serialization.Encoding.PEM))
    with open(key_path, "wb") as f:
        f.write(
            leaf_key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )
    return root.public_bytes(serialization.Encoding.PEM), chain_path, key_path


class _Echo(Protocol):
    def dataReceived(self, data: bytes) -> None:
        self.transport.write(data)


class _Client(Protocol):
    """
    Says C{ping}, closes on the answer; L{done} fires with what came back
    once the connection is closed, or fails with why it was lost before.
    """

    def __init__(self) -> None:
        self.done: Deferred[bytes] = Deferred()
        self.answer = b""

    def connectionMade(self) -> None:
        self.transport.write(b"ping")

    def dataReceived(self, data: bytes) -> None:
        self.answer += data
        self.transport.loseConnection()

    def connectionLost(self, reason: Any) -> None:
        if self.answer:
            self.done.callback(self.answer)
        else:
            self.done.errback(reason)


class ChainTests(TestCase):
    """
    Over a real TLS connection on 127.0.0.1: a certificate file with the
    whole chain is served whole.
    """

    async def handshake(self, description: str, root_pem: bytes) -> bytes:
        from twisted.internet import reactor

        port = await endpoints.serverFromString(reactor, description).listen(Factory.forProtocol(_Echo))
        self.addCleanup(port.stopListening)
        options = ssl.optionsForClientTLS("localhost", trustRoot=ssl.Certificate.loadPEM(root_pem))
        client = endpoints.wrapClientTLS(
            options, endpoints.TCP4ClientEndpoint(reactor, "127.0.0.1", port.getHost().port)
        )
        protocol = await client.connect(Factory.forProtocol(_Client))
        return await protocol.done

    async def test_fullChain(self) -> None:
        """
        A client that trusts only the root CA verifies the server whose
        jmap-cert-path holds its certificate and the intermediate (it
        would fail with the server's certificate alone).
        """
        root_pem, chain_path, key_path = make_chain(os.path.abspath(self.mktemp()))
        description = endpoint_string("127.0.0.1", 0, chain_path, key_path)
        self.assertIn(":extraCertChain=", description)
        self.assertEqual(await self.handshake(description, root_pem), b"ping")

    async def test_leafAloneFails(self) -> None:
        """
        The check above can fail: without the intermediate (the string as
        it was before, certKey only), that client refuses the server.
        """
        root_pem, chain_path, key_path = make_chain(os.path.abspath(self.mktemp()))
        description = endpoint_string("127.0.0.1", 0, chain_path, key_path).split(":extraCertChain=")[0]
        with self.assertRaises(SSL.Error):
            await self.handshake(description, root_pem)
