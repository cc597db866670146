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
L{Authority.issue} and written by L{marketplace.cluster.render}.  Keys and
certificates are made by L{marketplace.daemon.certificates}, as the
development ones are, valid for ten years: replacing one is deleting it
and running C{up} (or C{render}) again.
"""

import functools
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence, Tuple

from marketplace.cluster.settings import create_private
from marketplace.daemon import certificates
from marketplace.daemon.certificates import BOTH, CLIENT, SERVER  # noqa: F401 (for render)

FOLDER = "tls"
CA_CERT = "tls/ca/ca.pem"
CA_KEY = "tls/ca.key"
OPERATOR_CERT = "tls/operator.pem"
OPERATOR_KEY = "tls/operator.key"
VALID_DAYS = 3650
ORGANIZATION = "Marketplace cluster"


@dataclass(frozen=True)
class Authority:
    """A cluster's CA: its certificate and private key, as PEM text.  (An
    etcd member's certificate is both a server's and a client's, to its
    peers; Patroni serves its REST API and PostgreSQL and is etcd's
    client.)"""

    cert_pem: str
    key_pem: str

    @classmethod
    def create(cls, common_name: str = "Marketplace cluster CA") -> "Authority":
        """A new CA with a new key."""
        return cls(*certificates.new_authority(common_name, ORGANIZATION, VALID_DAYS))

    def issue(self, common_name: str, names: Sequence[str],
              usages=BOTH) -> Tuple[str, str]:
        """A new key and a certificate for it, signed by this CA, for
        C{names} (addresses or host names): (certificate, key) as PEM."""
        return certificates.issue(self.cert_pem, self.key_pem, common_name, ORGANIZATION,
                                  names, usages, VALID_DAYS)


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
