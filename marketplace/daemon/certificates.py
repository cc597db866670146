"""A certificate authority and the certificates it signs, as PEM text.

ECDSA P-256 keys (C{cryptography}), certificates valid from five minutes
ago for C{valid_days}.  Nothing here writes a file: the development
certificates (L{marketplace.daemon.devcerts}) and the replicated cluster's
(L{marketplace.cluster.certs}) keep them where they belong.
"""

import datetime
import ipaddress
from typing import Sequence, Tuple

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

#: What a certificate may be used for: a server, a client, or both.
SERVER = (ExtendedKeyUsageOID.SERVER_AUTH,)
CLIENT = (ExtendedKeyUsageOID.CLIENT_AUTH,)
BOTH = SERVER + CLIENT


def _name(organization: str, common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization),
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


def _validity(builder: x509.CertificateBuilder, valid_days: int) -> x509.CertificateBuilder:
    now = datetime.datetime.now(datetime.timezone.utc)
    return (builder.not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=valid_days)))


def new_authority(common_name: str, organization: str, valid_days: int) -> Tuple[str, str]:
    """A new CA with a new key: (certificate, key) as PEM."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = _name(organization, common_name)
    usage = x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                          content_commitment=False, key_encipherment=False,
                          data_encipherment=False, key_agreement=False,
                          encipher_only=False, decipher_only=False)
    cert = (_validity(x509.CertificateBuilder(), valid_days)
            .subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(usage, critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                           critical=False)
            .sign(key, hashes.SHA256()))
    return _cert_pem(cert), _key_pem(key)


def issue(ca_cert_pem: str, ca_key_pem: str, common_name: str, organization: str,
          names: Sequence[str], usages, valid_days: int) -> Tuple[str, str]:
    """A new key and a certificate for it, signed by the CA of
    C{ca_cert_pem} and C{ca_key_pem}, for C{names} (addresses or host
    names; none: no alternative names): (certificate, key) as PEM."""
    ca_cert = x509.load_pem_x509_certificate(ca_cert_pem.encode())
    ca_key = serialization.load_pem_private_key(ca_key_pem.encode(), None)
    key = ec.generate_private_key(ec.SECP256R1())
    builder = (_validity(x509.CertificateBuilder(), valid_days)
               .subject_name(_name(organization, common_name)).issuer_name(ca_cert.subject)
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
               .add_extension(x509.ExtendedKeyUsage(list(usages)), critical=False)
               .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                   ca_key.public_key()), critical=False))
    if names:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([_alt_name(n) for n in dict.fromkeys(names)]),
            critical=False)
    return _cert_pem(builder.sign(ca_key, hashes.SHA256())), _key_pem(key)


__all__ = ["BOTH", "CLIENT", "SERVER", "issue", "new_authority"]
