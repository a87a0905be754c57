"""A throwaway certificate authority and a server certificate for 127.0.0.1 and localhost,
made with the `cryptography` package, for tests that speak TLS (STARTTLS on the SMTP
submission listener, Postfix relaying into it).

    certs = tls.certificates(tmp_path)       # writes ca.pem, cert.pem, key.pem there
    env["GATEWAY_TLS_CERT"] = str(certs.cert_file)
    env["GATEWAY_TLS_KEY"] = str(certs.key_file)
    client = smtplib.SMTP("127.0.0.1", port)
    client.starttls(context=certs.client_context())  # verifies the chain and 127.0.0.1

The keys are ECDSA P-256 (fast to make) and made once per test process; each call writes
the same PEM files into the directory it is given. `certs.server_context()` is what a
stand-in server loads; `certs.other_ca_file` is a second CA that did not sign the
certificate, for tests that a client which verifies refuses it.
"""

from __future__ import annotations

import datetime
import functools
import ipaddress
import ssl
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = ["Certificates", "certificates"]

HOSTNAMES = ("localhost",)
ADDRESSES = ("127.0.0.1",)


@dataclass(frozen=True)
class _Pems:
    ca: bytes
    cert: bytes
    key: bytes
    other_ca: bytes


@dataclass(frozen=True)
class Certificates:
    """PEM files of the test CA and of the server's certificate (leaf only) and key."""

    ca_file: Path
    cert_file: Path
    key_file: Path
    other_ca_file: Path

    def server_context(self) -> ssl.SSLContext:
        """What a TLS server presents: the certificate and its key."""
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self.cert_file, self.key_file)
        return context

    def client_context(self) -> ssl.SSLContext:
        """A client that trusts only the test CA and checks the host name (or address)."""
        return ssl.create_default_context(cafile=str(self.ca_file))


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Gateway tests"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _ca(
    common_name: str, now: datetime.datetime
) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = _name(common_name)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return key, cert


@functools.cache
def _pems() -> _Pems:
    now = datetime.datetime.now(datetime.UTC)
    ca_key, ca_cert = _ca("Gateway test CA", now)
    _, other_ca = _ca("Gateway test CA (unrelated)", now)
    key = ec.generate_private_key(ec.SECP256R1())
    names: list[x509.GeneralName] = [x509.DNSName(h) for h in HOSTNAMES]
    names += [x509.IPAddress(ipaddress.ip_address(a)) for a in ADDRESSES]
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name("localhost"))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    return _Pems(
        ca=ca_cert.public_bytes(pem),
        cert=cert.public_bytes(pem),
        key=key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()),
        other_ca=other_ca.public_bytes(pem),
    )


def certificates(directory: Path) -> Certificates:
    """Write ca.pem, cert.pem, key.pem (mode 0600) and other-ca.pem into `directory`."""
    pems = _pems()
    directory.mkdir(parents=True, exist_ok=True)
    certs = Certificates(
        ca_file=directory / "ca.pem",
        cert_file=directory / "cert.pem",
        key_file=directory / "key.pem",
        other_ca_file=directory / "other-ca.pem",
    )
    certs.ca_file.write_bytes(pems.ca)
    certs.cert_file.write_bytes(pems.cert)
    certs.key_file.touch(mode=0o600)
    certs.key_file.write_bytes(pems.key)
    certs.other_ca_file.write_bytes(pems.other_ca)
    return certs
