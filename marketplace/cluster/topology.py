"""The plan of a cluster: its hosts, their addresses and what runs on them.

Nothing here touches the machine; L{launch} carries the plan out.
"""

from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional

from marketplace.cluster import certs, render
from marketplace.cluster.render import (  # noqa: F401 (the cluster's ports, here too)
    ETCD_CLIENT_PORT,
    ETCD_PEER_PORT,
    METRICS_PORTS,
    PATRONI_PORT,
    POSTGRES_PORT,
    SERVICE_PORTS,
)
from marketplace.cluster.settings import SETTLE_AFTER, Settings  # noqa: F401


@dataclass(frozen=True)
class Host:
    """One host: a network namespace with one address."""

    name: str
    role: str  # "database", "seller", "buyer" or "payments"
    address: str

    def namespace(self, cluster_id: int) -> str:
        """The name of this host's network namespace."""
        return f"mp{cluster_id}-{self.name}"


@dataclass
class Plan(Settings):
    """Everything that tells one cluster from another on the machine: its
    number (hence its addresses), its folder, and its L{Settings}."""

    cluster_id: int
    folder: Path
    frontends_per_service: int = 2

    def __post_init__(self) -> None:
        if self.network is None:
            self.network = f"{self.subnet}.0/24"
        if self.admin_network is None:
            # The operator (marketplace-cluster, the tests) is this machine.
            self.admin_network = f"{self.gateway}/32"

    @property
    def subnet(self) -> str:
        """The cluster's private /24 network."""
        return f"10.77.{self.cluster_id}"

    @property
    def bridge(self) -> str:
        """The bridge in the machine's own namespace that joins the hosts."""
        return f"mpbr{self.cluster_id}"

    @property
    def gateway(self) -> str:
        """The machine's own address on the bridge (clients run there)."""
        return f"{self.subnet}.1"

    @property
    def hosts(self) -> List[Host]:
        """Every host: three database hosts, then the frontends."""
        hosts = [Host(f"db{i}", "database", f"{self.subnet}.{10 + i}") for i in (1, 2, 3)]
        for base, role in ((20, "buyer"), (30, "seller"), (40, "payments")):
            for i in range(1, self.frontends_per_service + 1):
                hosts.append(Host(f"{role}{i}", role, f"{self.subnet}.{base + i}"))
        return hosts

    def machines(self) -> List[render.Machine]:
        """The hosts as L{render} sees them (one role each)."""
        return [render.Machine(h.name, h.address, (h.role,)) for h in self.hosts]

    def by_role(self, role: str) -> List[Host]:
        """The hosts of one role, in order."""
        return [host for host in self.hosts if host.role == role]

    def host(self, name: str) -> Host:
        """The host called C{name}."""
        for host in self.hosts:
            if host.name == name:
                return host
        raise KeyError(f"no host {name!r} in this cluster")

    def database_dsn(self, database: str, host: Optional[Host] = None) -> str:
        """A libpq connection string for C{database}: on every database host,
        taking the first that accepts writes (or only on C{host})."""
        hosts = [host] if host else self.by_role("database")
        return render.database_dsn(
            self, [render.Machine(h.name, h.address, (h.role,)) for h in hosts], database,
            str(self.folder / certs.CA_CERT))

    def endpoint(self, host: Host) -> str:
        """The client endpoint description of a frontend host's service
        (the payments service's is TLS, checked against the cluster's CA)."""
        if host.role == "payments":
            return (f"tls:host={host.address}:port={SERVICE_PORTS[host.role]}"
                    f":trustRoots={(self.folder / certs.CA_CERT).parent}")
        return f"tcp:{host.address}:{SERVICE_PORTS[host.role]}"

    def metrics_url(self, host: Host, path: str = "/metrics") -> str:
        """Where frontend C{host} serves its metrics and health checks."""
        return f"http://{host.address}:{METRICS_PORTS[host.role]}{path}"
