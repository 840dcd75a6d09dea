"""TLS and mutual TLS over loopback with certificates generated here (SEC-005)."""

from __future__ import annotations

import contextlib
import datetime as dt
import ipaddress
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from hazremote.wire.haz.remote.v1 import cache_pb2, cache_pb2_grpc
from tests.cache_service.server.serverkit import ServerThread, running_server, server_config


@dataclass(frozen=True)
class Issued:
    cert: bytes
    key: bytes


def _name(common: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])


def _issue(
    common: str,
    *,
    issuer: tuple[x509.Certificate, ec.EllipticCurvePrivateKey] | None = None,
    server: bool = False,
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(common))
        .issuer_name(issuer[0].subject if issuer else _name(common))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + dt.timedelta(days=1))
    )
    if issuer is None:
        builder = builder.add_extension(x509.BasicConstraints(ca=True, path_length=0), True)
    else:
        builder = builder.add_extension(x509.BasicConstraints(ca=False, path_length=None), True)
        usage = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
        builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), False)
    if server:
        builder = builder.add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            False,
        )
    signer = issuer[1] if issuer else key
    return builder.sign(signer, hashes.SHA256()), key


def _pem(pair: tuple[x509.Certificate, ec.EllipticCurvePrivateKey]) -> Issued:
    cert, key = pair
    return Issued(
        cert=cert.public_bytes(serialization.Encoding.PEM),
        key=key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
    )


@dataclass(frozen=True)
class Pki:
    ca: Issued
    server: Issued
    client: Issued
    #: A client certificate from a CA the server does not trust.
    stranger: Issued
    directory: Path


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    directory = tmp_path_factory.mktemp("pki")
    ca = _issue("haz test CA")
    other_ca = _issue("someone else's CA")
    pki = Pki(
        ca=_pem(ca),
        server=_pem(_issue("localhost", issuer=ca, server=True)),
        client=_pem(_issue("ci-runner", issuer=ca)),
        stranger=_pem(_issue("stranger", issuer=other_ca)),
        directory=directory,
    )
    for name, issued in (("ca", pki.ca), ("server", pki.server)):
        (directory / f"{name}.crt").write_bytes(issued.cert)
        (directory / f"{name}.key").write_bytes(issued.key)
    return pki


@contextlib.contextmanager
def _tls_server(pki: Pki, *, mutual: bool) -> Iterator[ServerThread]:
    config = server_config(
        tls_cert=pki.directory / "server.crt",
        tls_key=pki.directory / "server.key",
        tls_client_ca=pki.directory / "ca.crt" if mutual else None,
    )
    with running_server(config) as server:
        yield server


def _works(target: str, credentials: grpc.ChannelCredentials | None) -> bool:
    channel = (
        grpc.insecure_channel(target)
        if credentials is None
        else grpc.secure_channel(target, credentials)
    )
    with channel:
        try:
            cache_pb2_grpc.CapabilitiesStub(channel).GetCapabilities(
                cache_pb2.GetCapabilitiesRequest(), timeout=10
            )
        except grpc.RpcError as exc:
            code = exc.code()
        else:
            return True
    assert code is grpc.StatusCode.UNAVAILABLE
    return False


def test_tls_accepts_clients_trusting_the_ca_and_refuses_plaintext(pki: Pki) -> None:
    """SEC-005: with --tls-cert/--tls-key a client with the CA connects; plaintext fails."""
    with _tls_server(pki, mutual=False) as server:
        assert _works(server.target, grpc.ssl_channel_credentials(root_certificates=pki.ca.cert))
        assert not _works(server.target, None)
        # A client that does not trust the server's CA refuses the connection too.
        stranger_ca = grpc.ssl_channel_credentials(root_certificates=pki.stranger.cert)
        assert not _works(server.target, stranger_ca)


def test_mutual_tls_requires_a_client_certificate_from_the_ca(pki: Pki) -> None:
    """SEC-005 (mutual TLS): with --tls-client-ca a client without a certificate, or with one
    from another CA, fails; a client with a certificate the CA signed works."""
    with _tls_server(pki, mutual=True) as server:
        assert not _works(
            server.target, grpc.ssl_channel_credentials(root_certificates=pki.ca.cert)
        )
        assert not _works(
            server.target,
            grpc.ssl_channel_credentials(
                root_certificates=pki.ca.cert,
                private_key=pki.stranger.key,
                certificate_chain=pki.stranger.cert,
            ),
        )
        assert _works(
            server.target,
            grpc.ssl_channel_credentials(
                root_certificates=pki.ca.cert,
                private_key=pki.client.key,
                certificate_chain=pki.client.cert,
            ),
        )
        assert not _works(server.target, None)
