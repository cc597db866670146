"""TLS for clients: endpoints that verify the server against a given CA.

The services listen through server endpoint descriptions, so TLS there is
C{--listen ssl:8443:privateKey=KEY:certKey=CERT}.  A client names the
service with a client endpoint description; Twisted's C{tls:} endpoint
verifies the server against the system's CAs, or against the C{.pem} files
of a folder (C{tls:host=H:port=P:trustRoots=FOLDER}).  L{client_endpoint}
does the same from one CA file, which is what a C{--ca-cert FILE} option
gives; L{client_description} writes the description of either.
"""

from pathlib import Path
from typing import Optional, Union

from twisted.internet import ssl
from twisted.internet.endpoints import HostnameEndpoint, wrapClientTLS
from twisted.internet.interfaces import IStreamClientEndpoint

from marketplace.frame.descriptions import quote


def client_description(host: str, port: int, ca_dir: Optional[str] = None) -> str:
    """A C{tls:} client endpoint description of C{host}:C{port}, trusting the
    CA certificates (C{*.pem}) of C{ca_dir}, or the system's without it."""
    description = f"tls:host={quote(host)}:port={int(port)}"
    if ca_dir is not None:
        description += f":trustRoots={quote(str(ca_dir))}"
    return description


def trust_root(ca_cert: Union[str, Path]):
    """The trust root of every certificate in the PEM file C{ca_cert}."""
    data = Path(ca_cert).read_bytes()
    begin = b"-----BEGIN CERTIFICATE-----"
    certificates = [
        ssl.Certificate.loadPEM(begin + part)
        for part in data.split(begin)[1:]
    ]
    if not certificates:
        raise ValueError(f"{ca_cert} holds no PEM certificate")
    return ssl.trustRootFromCertificates(certificates)


def client_endpoint(
    reactor, host: str, port: int, ca_cert: Union[str, Path, None] = None
) -> IStreamClientEndpoint:
    """A TLS client endpoint of C{host}:C{port} that verifies the server's
    certificate for C{host}, against the CA file C{ca_cert} (PEM), or the
    system's CAs without it.  The client library takes it as its endpoint."""
    root = trust_root(ca_cert) if ca_cert is not None else ssl.platformTrust()
    options = ssl.optionsForClientTLS(host, trustRoot=root)
    return wrapClientTLS(options, HostnameEndpoint(reactor, host, int(port)))


__all__ = ["client_description", "client_endpoint", "trust_root"]
