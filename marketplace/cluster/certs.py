"""The cluster's certificate authority and the certificates it signs.

A cluster's links (PostgreSQL, replication, etcd's client and peer ports,
Patroni's REST API, buyer -> payments) are TLS, every certificate signed by
the cluster's own CA, made at its first C{up} (or C{render}) and kept in
its folder like its other secrets:

    tls/ca/ca.pem        the CA's certificate (tls/ca/ is a folder a client
                         can trust as it is: it holds nothing else)
    tls/ca.key           the CA's private key (0600)
    tls/operator.pem     the operator's client certificate (marketplace-
    tls/operator.key     cluster's own calls to etcd and Patroni)

Each host's certificates (its address as their name) are issued by
L{Authority.issue} and written by L{marketplace.cluster.render}.  Keys are
ECDSA P-256 (C{cryptography}, as marketplace.daemon.devcerts), the
certificates valid for ten years: replacing one is deleting it and running
C{up} (or C{render}) again.
"""

import datetime
import functools
import ipaddress
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence, Tuple

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from marketplace.cluster.settings import create_private

FOLDER = "tls"
CA_CERT = "tls/ca/ca.pem"
CA_KEY = "tls/ca.key"
OPERATOR_CERT = "tls/operator.pem"
OPERATOR_KEY = "tls/operator.key"
VALID_DAYS = 3650

#: What a certificate may be used for: a server, a client, or both (an
#: etcd member is both to its peers; Patroni serves its REST API and
#: PostgreSQL and is etcd's client).
SERVER = (ExtendedKeyUsageOID.SERVER_AUTH,)
CLIENT = (ExtendedKeyUsageOID.CLIENT_AUTH,)
BOTH = SERVER + CLIENT


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Marketplace cluster"),
                      x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _key_pem(key) -> str:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption()).decode()


def _cert_pem(cert: x509.Certificate) -> str:
    return cert.public_bytes(serialization.Encoding.PEM).decode()


def _alt_name(host: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        return x509.DNSName(host)


def _validity(builder: x509.CertificateBuilder) -> x509.CertificateBuilder:
    now = datetime.datetime.now(datetime.timezone.utc)
    return (builder.not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=VALID_DAYS)))


@dataclass(frozen=True)
class Authority:
    """A CA: its certificate and private key, as PEM text."""

    cert_pem: str
    key_pem: str

    @classmethod
    def create(cls, common_name: str = "Marketplace cluster CA") -> "Authority":
        """A new CA with a new key."""
        key = ec.generate_private_key(ec.SECP256R1())
        name = _name(common_name)
        usage = x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                              content_commitment=False, key_encipherment=False,
                              data_encipherment=False, key_agreement=False,
                              encipher_only=False, decipher_only=False)
        cert = (_validity(x509.CertificateBuilder())
                .subject_name(name).issuer_name(name).public_key(key.public_key())
                .serial_number(x509.random_serial_number())
                .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
                .add_extension(usage, critical=True)
                .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                               critical=False)
                .sign(key, hashes.SHA256()))
        return cls(_cert_pem(cert), _key_pem(key))

    def issue(self, common_name: str, names: Sequence[str],
              usages=BOTH) -> Tuple[str, str]:
        """A new key and a certificate for it, signed by this CA, for
        C{names} (addresses or host names): (certificate, key) as PEM."""
        ca_cert = x509.load_pem_x509_certificate(self.cert_pem.encode())
        ca_key = serialization.load_pem_private_key(self.key_pem.encode(), None)
        key = ec.generate_private_key(ec.SECP256R1())
        builder = (_validity(x509.CertificateBuilder())
                   .subject_name(_name(common_name)).issuer_name(ca_cert.subject)
                   .public_key(key.public_key()).serial_number(x509.random_serial_number())
                   .add_extension(x509.BasicConstraints(ca=False, path_length=None),
                                  critical=True)
                   .add_extension(x509.ExtendedKeyUsage(list(usages)), critical=False)
                   .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                       ca_key.public_key()), critical=False))
        if names:
            builder = builder.add_extension(
                x509.SubjectAlternativeName([_alt_name(n) for n in dict.fromkeys(names)]),
                critical=False)
        return _cert_pem(builder.sign(ca_key, hashes.SHA256())), _key_pem(key)


def load_or_create(folder: Path) -> Authority:
    """The CA kept in C{folder} (a cluster's folder), made there with the
    operator's client certificate if there is none yet.  Keys are private
    (0600) from their first byte and never overwritten."""
    folder = Path(folder)
    cert, key = folder / CA_CERT, folder / CA_KEY
    if not cert.exists():
        made = Authority.create()
        cert.parent.mkdir(parents=True, exist_ok=True)
        # The key first: a certificate on disk means its key is there too.
        create_private(key, made.key_pem)
        create_private(cert, made.cert_pem)
    authority = Authority(cert.read_text(), key.read_text())
    if not (folder / OPERATOR_CERT).exists():
        operator_cert, operator_key = authority.issue("marketplace-cluster operator", [],
                                                      CLIENT)
        create_private(folder / OPERATOR_KEY, operator_key)
        create_private(folder / OPERATOR_CERT, operator_cert)
    return authority


def client_context(folder: str) -> ssl.SSLContext:
    """A TLS client context for the cluster in C{folder}: it trusts only
    the cluster's CA (checking the server's address against its
    certificate) and shows the operator's certificate (etcd asks for one)."""
    # Made once per CA (a folder made again holds another one).
    return _client_context(str(folder), (Path(folder) / CA_CERT).read_text())


@functools.lru_cache(maxsize=16)
def _client_context(folder: str, ca_pem: str) -> ssl.SSLContext:
    context = ssl.create_default_context(cadata=ca_pem)
    context.load_cert_chain(str(Path(folder) / OPERATOR_CERT), str(Path(folder) / OPERATOR_KEY))
    return context
