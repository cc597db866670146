"""The plan of a cluster: its hosts, their addresses and what runs on them.

Nothing here touches the machine; L{launch} carries the plan out.
"""

import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional

ETCD_CLIENT_PORT = 2379
ETCD_PEER_PORT = 2380
PATRONI_PORT = 8008
POSTGRES_PORT = 5432
SERVICE_PORTS = {"seller": 8080, "buyer": 8081, "payments": 8082}
#: Each frontend serves /metrics and /health/* on its address at this port.
METRICS_PORT = 9100

#: Patroni's shortest leader lease (it raises smaller ones to 20 s): a
#: primary that dies without a word is replaced once its lease runs out.
PATRONI_TTL = 20
PATRONI_LOOP_WAIT = 1
PATRONI_RETRY_TIMEOUT = 3

#: Seconds after which a buyer daemon settles a purchase left pending by a
#: buyer daemon that died, unless a retry of it settles it first (after
#: half a second: see marketplace/buyer/purchase.py).  Shorter would also settle
#: live purchases that are slow under load, whose buyers would then be
#: asked to try again.
SETTLE_AFTER = 10.0


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
class Plan:
    """Everything that tells one cluster from another on the machine."""

    cluster_id: int
    folder: Path
    frontends_per_service: int = 2
    settle_after: float = SETTLE_AFTER
    superuser_password: str = field(default_factory=lambda: secrets.token_hex(16))
    replication_password: str = field(default_factory=lambda: secrets.token_hex(16))
    rest_password: str = field(default_factory=lambda: secrets.token_hex(16))
    #: What the buyer daemons show the payments daemons (every host the same).
    payments_secret: str = field(default_factory=lambda: secrets.token_hex(24))

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

    def by_role(self, role: str) -> List[Host]:
        """The hosts of one role, in order."""
        return [host for host in self.hosts if host.role == role]

    def host(self, name: str) -> Host:
        """The host called C{name}."""
        for host in self.hosts:
            if host.name == name:
                return host
        raise KeyError(f"no host {name!r} in this cluster")

    def etcd_hosts(self) -> str:
        """The etcd members' client addresses, as Patroni wants them."""
        return ",".join(f"{h.address}:{ETCD_CLIENT_PORT}" for h in self.by_role("database"))

    def etcd_command(self, host: Host, etcd: str) -> List[str]:
        """The command line of the etcd member on database host C{host}."""
        members = ",".join(
            f"{h.name}=http://{h.address}:{ETCD_PEER_PORT}" for h in self.by_role("database")
        )
        return [
            etcd,
            "--name", host.name,
            "--data-dir", str(self.folder / host.name / "etcd"),
            "--listen-peer-urls", f"http://{host.address}:{ETCD_PEER_PORT}",
            "--initial-advertise-peer-urls", f"http://{host.address}:{ETCD_PEER_PORT}",
            "--listen-client-urls", f"http://{host.address}:{ETCD_CLIENT_PORT}",
            "--advertise-client-urls", f"http://{host.address}:{ETCD_CLIENT_PORT}",
            "--initial-cluster", members,
            "--initial-cluster-token", f"marketplace-{self.cluster_id}",
            "--initial-cluster-state", "new",
            # Small heartbeats: a lost member is noticed within a second.
            "--heartbeat-interval", "100",
            "--election-timeout", "1000",
        ]

    def patroni_config(self, host: Host, bin_dir: str) -> Dict:
        """Patroni's configuration for database host C{host}."""
        home = self.folder / host.name
        return {
            "scope": f"marketplace-{self.cluster_id}",
            "name": host.name,
            "log": {"level": "INFO"},
            "restapi": {
                "listen": f"{host.address}:{PATRONI_PORT}",
                "connect_address": f"{host.address}:{PATRONI_PORT}",
                "authentication": {"username": "patroni", "password": self.rest_password},
            },
            "etcd3": {"hosts": self.etcd_hosts()},
            "bootstrap": {
                "dcs": {
                    "ttl": PATRONI_TTL,
                    "loop_wait": PATRONI_LOOP_WAIT,
                    "retry_timeout": PATRONI_RETRY_TIMEOUT,
                    "maximum_lag_on_failover": 1048576,
                    # A commit is acknowledged only once a second node has it.
                    "synchronous_mode": True,
                    "postgresql": {
                        "use_pg_rewind": True,
                        "use_slots": True,
                        "parameters": {
                            "synchronous_commit": "on",
                            "wal_level": "replica",
                            "hot_standby": "on",
                            "wal_log_hints": "on",
                            "max_wal_senders": 10,
                            "max_replication_slots": 10,
                            "max_connections": 200,
                        },
                    },
                },
                "initdb": [{"encoding": "UTF8"}, {"auth-local": "trust"}],
            },
            "postgresql": {
                "listen": f"{host.address}:{POSTGRES_PORT}",
                "connect_address": f"{host.address}:{POSTGRES_PORT}",
                "data_dir": str(home / "data"),
                "bin_dir": bin_dir,
                "pgpass": str(home / "pgpass"),
                "authentication": {
                    "superuser": {"username": "postgres", "password": self.superuser_password},
                    "replication": {
                        "username": "replicator", "password": self.replication_password,
                    },
                    "rewind": {"username": "postgres", "password": self.superuser_password},
                },
                "parameters": {"unix_socket_directories": str(home)},
                # Patroni's own connections go through the socket.
                "use_unix_socket": True,
                "pg_hba": [
                    "local all all trust",
                    f"host replication replicator {self.subnet}.0/24 scram-sha-256",
                    f"host all all {self.subnet}.0/24 scram-sha-256",
                ],
            },
        }

    def database_dsn(self, database: str, host: Optional[Host] = None) -> str:
        """A libpq connection string for C{database}: on every database host,
        taking the first that accepts writes (or only on C{host})."""
        hosts = [host] if host else self.by_role("database")
        attributes = {
            "host": ",".join(h.address for h in hosts),
            "port": ",".join(str(POSTGRES_PORT) for _ in hosts),
            "dbname": database,
            "user": "postgres",
            "password": self.superuser_password,
            "target_session_attrs": "read-write",
            # A dead host must not hold a connection attempt or a
            # statement for long: give up on it and try the next.
            "connect_timeout": "2",
            "keepalives": "1",
            "keepalives_idle": "2",
            "keepalives_interval": "1",
            "keepalives_count": "2",
            "tcp_user_timeout": "4000",
        }
        return " ".join(f"{key}={value}" for key, value in attributes.items())

    def endpoint(self, host: Host) -> str:
        """The client endpoint description of a frontend host's service."""
        return f"tcp:{host.address}:{SERVICE_PORTS[host.role]}"

    def metrics_url(self, host: Host, path: str = "/metrics") -> str:
        """Where frontend C{host} serves its metrics and health checks."""
        return f"http://{host.address}:{METRICS_PORT}{path}"

    def daemon_command(self, host: Host, twistd: str, payments: Host) -> List[str]:
        """The twistd command line of frontend C{host} (its secrets are in
        L{daemon_environment}, out of sight of C{ps})."""
        log = self.folder / host.name / "twistd.log"
        listen = f"tcp:{SERVICE_PORTS[host.role]}:interface={host.address}"
        command = [
            twistd, "--nodaemon", "--pidfile=", f"--logfile={log}",
            f"marketplace-{host.role}", f"--listen={listen}",
            f"--data-dir={self.folder / host.name}",
            f"--metrics=tcp:{METRICS_PORT}:interface={host.address}",
        ]
        if host.role in ("buyer", "seller"):
            # Every client of the cluster comes from one address (the
            # machine's own namespace): the per-address sign-up and hashing
            # shares, meant for strangers on the internet, are raised.
            command += ["--signups-per-address=100000", "--hash-per-address=64",
                        "--hash-queue=1024"]
        if host.role == "buyer":
            command += [
                f"--payments=tcp:{payments.address}:{SERVICE_PORTS['payments']}",
                # Purchases left pending by a failure are settled soon.
                f"--settle-after={self.settle_after:g}",
            ]
        return command

    def daemon_environment(self, host: Host) -> Dict[str, str]:
        """The connection strings and secret of frontend C{host}."""
        if host.role == "payments":
            return {
                "MARKETPLACE_PAYMENTS_DB": self.database_dsn("payments"),
                "MARKETPLACE_PAYMENTS_SECRET": self.payments_secret,
            }
        environment = {
            "MARKETPLACE_CUSTOMER_DB": self.database_dsn("marketplace"),
            "MARKETPLACE_PRODUCT_DB": self.database_dsn("marketplace"),
        }
        if host.role == "buyer":
            environment["MARKETPLACE_PAYMENTS_SECRET"] = self.payments_secret
        return environment
