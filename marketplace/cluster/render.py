"""Every file the hosts of a cluster need, from a list of its hosts.

A hosts file names each host, its address and its roles, one host a line:

    # name   address     roles
    db1      10.0.0.11   database
    db2      10.0.0.12   database
    db3      10.0.0.13   database
    web1     10.0.0.21   buyer,seller,payments
    network  10.0.0.0/24

(C{network}, optional: the network PostgreSQL lets clients in from; without
it, only the database hosts' addresses) the superuser and the tables' owner
may connect from; each service's role is let in only from its own hosts.)  L{render} turns it, with the cluster's
L{Settings}, into one folder per host: for a database host, etcd's and
Patroni's configuration and their systemd units; for a frontend host, one
environment file (connection strings and secrets), one systemd unit per
daemon and a libpq password file (C{pgpass}) with only the line of the
database role its daemons connect as (postgres/roles.py: marketplace_shop
for buyer and seller, marketplace_payments for payments; never the
superuser); for every host, the CA's certificate (L{certs}) and its own
certificates and keys under C{tls/}: every link between hosts is TLS
(docs/SECURITY.md, "The cluster's links").  The network-namespace
cluster (L{marketplace.cluster.launch})
starts its processes from exactly these files, read back with L{service}.
"""

import configparser
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import yaml

from marketplace.cluster import certs
from marketplace.cluster.settings import Settings, create_private
from marketplace.postgres import roles

ETCD_CLIENT_PORT = 2379
ETCD_PEER_PORT = 2380
PATRONI_PORT = 8008
POSTGRES_PORT = 5432
SERVICE_PORTS = {"seller": 8080, "buyer": 8081, "payments": 8082}
#: Each daemon serves /metrics and /health/* on its host's address here
#: (one port per role, so one host can run all three).
METRICS_PORTS = {"seller": 9100, "buyer": 9101, "payments": 9102}
ROLES = ("database", "buyer", "seller", "payments")

#: Patroni's shortest leader lease (it raises smaller ones to 20 s): a
#: primary that dies without a word is replaced once its lease runs out.
PATRONI_TTL = 20
PATRONI_LOOP_WAIT = 1
PATRONI_RETRY_TIMEOUT = 3


class HostsFileError(ValueError):
    """A hosts file that cannot be read; the message says where."""


@dataclass(frozen=True)
class Machine:
    """One host of a deployment and the roles it plays."""

    name: str
    address: str
    roles: Tuple[str, ...]


@dataclass(frozen=True)
class Layout:
    """Where things are on the hosts ({host} stands for a host's name)."""

    config: str = "/etc/marketplace"
    data: str = "/var/lib/marketplace"
    #: Where patroni and twistd are (the marketplace's virtual environment).
    bin: str = "/opt/marketplace/bin"
    #: Where etcd is.
    etcd_bin: str = "/usr/local/bin"
    #: Where PostgreSQL's programs are (Patroni's bin_dir).
    postgres_bin: str = "/usr/lib/postgresql/17/bin"
    postgres_user: str = "postgres"
    etcd_user: str = "etcd"
    daemon_user: str = "marketplace"
    #: The primary's archive_command, which sends each WAL segment to the
    #: backups (e.g. "barman-wal-archive BARMAN_HOST marketplace %p", of
    #: barman-cli); "": no archiving.
    archive_command: str = ""

    def config_dir(self, machine: Machine) -> str:
        """The folder of C{machine}'s configuration files."""
        return self.config.format(host=machine.name)

    def data_dir(self, machine: Machine) -> str:
        """The folder of C{machine}'s data."""
        return self.data.format(host=machine.name)

    def tls(self, machine: Machine, name: str) -> str:
        """Where C{machine} keeps TLS file C{name} ("ca/ca.pem" the CA's
        certificate, C{ca/} a folder that holds only it; "etcd.pem",
        "etcd.key", ...: a process's certificate and key)."""
        return f"{self.config_dir(machine)}/{certs.FOLDER}/{name}"


def parse_hosts(text: str) -> Tuple[List[Machine], Optional[str]]:
    """The machines of a hosts file, and its network (or None)."""
    machines, network = [], None
    for number, line in enumerate(text.splitlines(), 1):
        words = line.split("#", 1)[0].split()
        if not words:
            continue
        if words[0] == "network" and len(words) == 2:
            network = words[1]
            continue
        if len(words) != 3:
            raise HostsFileError(f"line {number}: expected NAME ADDRESS ROLES, got {line!r}")
        name, address, roles = words[0], words[1], tuple(words[2].split(","))
        unknown = set(roles) - set(ROLES)
        if unknown:
            raise HostsFileError(f"line {number}: unknown role {sorted(unknown)[0]!r}"
                                 f" (roles: {', '.join(ROLES)})")
        machines.append(Machine(name, address, roles))
    names = [m.name for m in machines]
    if len(set(names)) != len(names):
        raise HostsFileError("a host is listed twice")
    databases = [m for m in machines if "database" in m.roles]
    if len(databases) < 3 or len(databases) % 2 == 0:
        raise HostsFileError("etcd and Patroni need an odd number of database hosts, at"
                             " least three")
    for role in ("buyer", "seller", "payments"):
        if not any(role in m.roles for m in machines):
            raise HostsFileError(f"no host runs the {role} service")
    return machines, network


def with_role(machines: Sequence[Machine], role: str) -> List[Machine]:
    """The machines that play C{role}, in order."""
    return [m for m in machines if role in m.roles]


#: The database role each service's daemons connect as, and its database.
SERVICE_ROLES = {"buyer": roles.SHOP, "seller": roles.SHOP, "payments": roles.PAYMENTS}
SERVICE_DATABASES = {roles.SHOP: "marketplace", roles.PAYMENTS: "payments"}


def database_dsn(settings: Settings, databases: Sequence[Machine], database: str,
                 ca_file: str, user: str = "postgres", passfile: Optional[str] = None) -> str:
    """A libpq connection string for C{database}: on every database host,
    taking the first that accepts writes, over TLS only, each server's
    certificate checked against the CA in C{ca_file} and its address.  As
    the superuser (its password in the string) unless C{user} and its
    libpq C{passfile} are given."""
    attributes = {
        "host": ",".join(m.address for m in databases),
        "port": ",".join(str(POSTGRES_PORT) for _ in databases),
        "dbname": database,
        "user": user,
        **({"passfile": passfile} if passfile else {"password": settings.superuser_password}),
        "target_session_attrs": "read-write",
        # A dead host must not hold a connection attempt or a statement for
        # long: give up on it and try the next.
        "connect_timeout": "2",
        "keepalives": "1",
        "keepalives_idle": "2",
        "keepalives_interval": "1",
        "keepalives_count": "2",
        "tcp_user_timeout": "4000",
        "sslmode": "verify-full",
        "sslrootcert": ca_file,
    }
    return " ".join(f"{key}={value}" for key, value in attributes.items())


def etcd_config(settings: Settings, machines: Sequence[Machine], machine: Machine,
                layout: Layout) -> Dict:
    """etcd's configuration file for database host C{machine}."""
    members = ",".join(f"{m.name}=https://{m.address}:{ETCD_PEER_PORT}"
                       for m in with_role(machines, "database"))
    # Clients and peers alike must show a certificate of the cluster's CA
    # made for a client (only the database hosts' Patroni and the
    # operator's have one): nobody else can read or write a key.
    security = {
        "cert-file": layout.tls(machine, "etcd.pem"),
        "key-file": layout.tls(machine, "etcd.key"),
        "client-cert-auth": True,
        "trusted-ca-file": layout.tls(machine, "ca/ca.pem"),
    }
    return {
        "name": machine.name,
        "data-dir": f"{layout.data_dir(machine)}/etcd",
        "listen-peer-urls": f"https://{machine.address}:{ETCD_PEER_PORT}",
        "initial-advertise-peer-urls": f"https://{machine.address}:{ETCD_PEER_PORT}",
        "listen-client-urls": f"https://{machine.address}:{ETCD_CLIENT_PORT}",
        "advertise-client-urls": f"https://{machine.address}:{ETCD_CLIENT_PORT}",
        "client-transport-security": security,
        "peer-transport-security": dict(security),
        "initial-cluster": members,
        "initial-cluster-token": settings.scope,
        # Read only when the data folder is empty (the first start).
        "initial-cluster-state": "new",
        # Small heartbeats: a lost member is noticed within a second.
        "heartbeat-interval": 100,
        "election-timeout": 1000,
    }


def _addresses(machines: Sequence[Machine]) -> List[str]:
    return [f"{m.address}/32" for m in machines]


def pg_hba(settings: Settings, machines: Sequence[Machine]) -> List[str]:
    """Who PostgreSQL lets in, from where: each role only from the hosts
    that need it (the superuser and the tables' owner also from the
    operator's C{admin_network}, else the C{network}, if the settings name
    one)."""
    databases = with_role(machines, "database")
    admin = settings.admin_network or settings.network
    admins = _addresses(databases) + ([admin] if admin else [])
    shops = [m for m in machines if {"buyer", "seller"} & set(m.roles)]
    hba = ["local all all trust"]  # the socket is in the data folder, 0700
    # From other hosts, TLS only (hostssl): a plaintext connection finds no
    # line that admits it.
    # (From the operator's machine too: Barman's backups, pg_basebackup.)
    hba += [f"hostssl replication replicator {n} scram-sha-256" for n in admins]
    hba += [f"hostssl all postgres,{roles.OWNER} {n} scram-sha-256" for n in admins]
    hba += [f"hostssl {SERVICE_DATABASES[roles.SHOP]} {roles.SHOP} {n} scram-sha-256"
            for n in _addresses(shops)]
    hba += [f"hostssl {SERVICE_DATABASES[roles.PAYMENTS]} {roles.PAYMENTS} {n} scram-sha-256"
            for n in _addresses(with_role(machines, "payments"))]
    return hba


def _archiving(layout: Layout) -> Dict:
    """WAL archiving by whichever node is the primary (Patroni's dynamic
    configuration, the same on every node), a segment at least once a
    minute."""
    if not layout.archive_command:
        return {}
    return {"archive_mode": "on", "archive_command": layout.archive_command,
            "archive_timeout": 60}


def patroni_config(settings: Settings, machines: Sequence[Machine], machine: Machine,
                   layout: Layout) -> Dict:
    """Patroni's configuration for database host C{machine}."""
    data = layout.data_dir(machine)
    databases = with_role(machines, "database")
    # Patroni's connections to the other nodes (replication, pg_rewind)
    # check the server as the daemons do.
    verify = {"sslmode": "verify-full", "sslrootcert": layout.tls(machine, "ca/ca.pem")}
    certificate = {"certfile": layout.tls(machine, "patroni.pem"),
                   "keyfile": layout.tls(machine, "patroni.key")}
    return {
        "scope": settings.scope,
        "name": machine.name,
        "log": {"level": "INFO"},
        "restapi": {
            "listen": f"{machine.address}:{PATRONI_PORT}",
            "connect_address": f"{machine.address}:{PATRONI_PORT}",
            "authentication": {"username": "patroni", "password": settings.rest_password},
            # HTTPS; cafile is also what Patroni checks the other members'
            # REST APIs against when it calls them.
            **certificate,
            "cafile": layout.tls(machine, "ca/ca.pem"),
        },
        "etcd3": {
            "hosts": ",".join(f"{m.address}:{ETCD_CLIENT_PORT}" for m in databases),
            "protocol": "https",
            "cacert": layout.tls(machine, "ca/ca.pem"),
            "cert": certificate["certfile"],
            "key": certificate["keyfile"],
        },
        "bootstrap": {
            "dcs": {
                "ttl": PATRONI_TTL,
                "loop_wait": PATRONI_LOOP_WAIT,
                "retry_timeout": PATRONI_RETRY_TIMEOUT,
                "maximum_lag_on_failover": 1048576,
                # A commit is acknowledged only once a second node has it;
                # every replica is synchronous, so that with the daemons'
                # synchronous_commit = remote_apply each standby that
                # answers reads has applied every acknowledged write
                # (docs/RELIABILITY.md, Reads on the replicas).
                "synchronous_mode": True,
                "synchronous_node_count": max(1, len(databases) - 1),
                "postgresql": {
                    "use_pg_rewind": True,
                    "use_slots": True,
                    "parameters": {
                        "synchronous_commit": "remote_apply",
                        "wal_level": "replica",
                        "hot_standby": "on",
                        "wal_log_hints": "on",
                        "max_wal_senders": 10,
                        "max_replication_slots": 10,
                        "max_connections": 200,
                        **_archiving(layout),
                    },
                },
            },
            "initdb": [{"encoding": "UTF8"}, {"auth-local": "trust"}],
        },
        "postgresql": {
            "listen": f"{machine.address}:{POSTGRES_PORT}",
            "connect_address": f"{machine.address}:{POSTGRES_PORT}",
            "data_dir": f"{data}/postgresql",
            "bin_dir": layout.postgres_bin,
            "pgpass": f"{data}/pgpass",
            "authentication": {
                "superuser": {"username": "postgres", "password": settings.superuser_password,
                              **verify},
                "replication": {"username": "replicator",
                                "password": settings.replication_password, **verify},
                "rewind": {"username": "postgres", "password": settings.superuser_password,
                           **verify},
            },
            "parameters": {
                "unix_socket_directories": data,
                "ssl": "on",
                "ssl_cert_file": certificate["certfile"],
                "ssl_key_file": certificate["keyfile"],
            },
            # A replica is cloned (a new node, reinitialize) after an
            # immediate checkpoint, not a spread one that can take minutes.
            "basebackup": [{"checkpoint": "fast"}],
            # Patroni's own connections go through the socket.
            "use_unix_socket": True,
            "pg_hba": pg_hba(settings, machines),
        },
    }


def daemon_command(settings: Settings, machines: Sequence[Machine], machine: Machine,
                   role: str, layout: Layout) -> List[str]:
    """The twistd command line of C{role}'s daemon on C{machine} (its
    secrets are in L{daemon_environment}, out of sight of C{ps})."""
    address = machine.address
    listen = f"tcp:{SERVICE_PORTS[role]}:interface={address}"
    if role == "payments":
        # Only its own buyers call it, over TLS only.
        listen = (f"ssl:{SERVICE_PORTS[role]}:interface={address}"
                  f":privateKey={layout.tls(machine, 'payments.key')}"
                  f":certKey={layout.tls(machine, 'payments.pem')}")
    command = [
        f"{layout.bin}/twistd", "--nodaemon", "--pidfile=", "--logfile=-",
        f"marketplace-{role}", f"--listen={listen}",
        f"--data-dir={layout.data_dir(machine)}/{role}",
        f"--metrics=tcp:{METRICS_PORTS[role]}:interface={address}",
    ]
    if role in ("buyer", "seller") and settings.load_testing:
        command += ["--signups-per-address=100000", "--request-keys-per-minute=1000000"]
    if role == "buyer":
        # Every payments daemon, starting with the one of the buyer's own
        # number, so that the buyers spread over them.
        # (trustRoots: a folder whose certificates are the only ones trusted.)
        payments = [f"tls:host={m.address}:port={SERVICE_PORTS['payments']}"
                    f":trustRoots={layout.tls(machine, 'ca')}"
                    for m in with_role(machines, "payments")]
        index = with_role(machines, "buyer").index(machine) % len(payments)
        command += [
            "--payments=" + "|".join(payments[index:] + payments[:index]),
            # Purchases left pending by a failure are settled soon.
            f"--settle-after={settings.settle_after:g}",
        ]
    return command


def daemon_environment(settings: Settings, machines: Sequence[Machine], role: str,
                       passfile: str = "/etc/marketplace/pgpass",
                       ca_file: str = "/etc/marketplace/tls/ca/ca.pem") -> Dict[str, str]:
    """The connection strings and secret of C{role}'s daemons, which
    connect as their service's role with the password in C{passfile},
    checking the server against the CA in C{ca_file}."""
    databases = with_role(machines, "database")
    user = SERVICE_ROLES[role]
    dsn = database_dsn(settings, databases, SERVICE_DATABASES[user], ca_file, user, passfile)
    if role == "payments":
        return {
            "MARKETPLACE_PAYMENTS_DB": dsn,
            "MARKETPLACE_PAYMENTS_SECRET": settings.payments_secret,
        }
    environment = {"MARKETPLACE_CUSTOMER_DB": dsn, "MARKETPLACE_PRODUCT_DB": dsn}
    if role == "buyer":
        environment["MARKETPLACE_PAYMENTS_SECRET"] = settings.payments_secret
    return environment


def _unit(description: str, user: str, command: Sequence[str], after: str = "",
          extra: Sequence[str] = ()) -> str:
    lines = [
        "[Unit]",
        f"Description={description}",
        f"After=network-online.target{' ' + after if after else ''}",
        "Wants=network-online.target",
        "",
        "[Service]",
        f"User={user}",
        *extra,
        "ExecStart=" + shlex.join(command),
        "",
        "[Install]",
        "WantedBy=multi-user.target",
        "",
    ]
    return "\n".join(lines)


def unit_name(role: str) -> str:
    """The systemd unit of a role's process ("etcd" and "patroni" for a
    database host)."""
    return f"marketplace-{role}.service"


def tls_files(authority: certs.Authority, machine: Machine) -> Dict[str, str]:
    """C{machine}'s TLS files, under its C{tls/}: the CA's certificate, and
    a certificate (for the host's address) and key for each process that
    needs one: etcd (server and peer client), Patroni (PostgreSQL's and
    the REST API's server, etcd's client), the payments daemon (server)."""
    files = {"ca/ca.pem": authority.cert_pem}
    needs = []
    if "database" in machine.roles:
        needs += [("etcd", certs.BOTH), ("patroni", certs.BOTH)]
    if "payments" in machine.roles:
        needs += [("payments", certs.SERVER)]
    for name, usages in needs:
        cert, key = authority.issue(f"{name} on {machine.name}", [machine.address], usages)
        # The key first: written in this order, a certificate on disk has its key.
        files[f"{name}.key"], files[f"{name}.pem"] = key, cert
    return {f"{certs.FOLDER}/{name}": text for name, text in files.items()}


def render(settings: Settings, machines: Sequence[Machine], layout: Layout = Layout(),
           *, passwords: Mapping[str, str], authority: certs.Authority) -> Dict[str, str]:
    """Every file of every host: {"HOST/FILE": text}.  C{passwords} are the
    service roles' (by role name, as rolescli.passwords_in reads them);
    C{authority} the cluster's CA (certificates are issued anew on every
    call: L{write} keeps those already written)."""
    files = {}
    for machine in machines:
        config = layout.config_dir(machine)
        home = machine.name
        for name, text in tls_files(authority, machine).items():
            files[f"{home}/{name}"] = text
        if "database" in machine.roles:
            etcd = etcd_config(settings, machines, machine, layout)
            patroni = patroni_config(settings, machines, machine, layout)
            files[f"{home}/etcd.yml"] = yaml.safe_dump(etcd, sort_keys=False)
            files[f"{home}/patroni.yml"] = yaml.safe_dump(patroni, sort_keys=False)
            files[f"{home}/{unit_name('etcd')}"] = _unit(
                f"etcd member {machine.name} of the marketplace's Patroni", layout.etcd_user,
                [f"{layout.etcd_bin}/etcd", "--config-file", f"{config}/etcd.yml"],
                extra=["Restart=on-failure"])
            files[f"{home}/{unit_name('patroni')}"] = _unit(
                f"Patroni (PostgreSQL) on {machine.name}", layout.postgres_user,
                [f"{layout.bin}/patroni", f"{config}/patroni.yml"],
                after=unit_name("etcd"),
                # Patroni's advice: stop only Patroni, which stops PostgreSQL.
                extra=["KillMode=process", "TimeoutSec=30", "Restart=no"])
        service_roles = sorted({SERVICE_ROLES[r] for r in machine.roles if r != "database"})
        if service_roles:
            # Only the roles this host's daemons connect as.
            files[f"{home}/pgpass"] = "".join(
                roles.pgpass_line(r, passwords[r]) for r in service_roles)
        for role in machine.roles:
            if role == "database":
                continue
            environment = daemon_environment(settings, machines, role, f"{config}/pgpass",
                                             layout.tls(machine, "ca/ca.pem"))
            files[f"{home}/{role}.env"] = "".join(
                f'{key}="{value}"\n' for key, value in environment.items())
            files[f"{home}/{unit_name(role)}"] = _unit(
                f"marketplace {role} daemon on {machine.name}", layout.daemon_user,
                daemon_command(settings, machines, machine, role, layout),
                after=unit_name("payments") if role == "buyer" else "",
                # SIGTERM: stop listening, answer what is in flight, exit.
                extra=[f"EnvironmentFile={config}/{role}.env", "Restart=on-failure",
                       "TimeoutStopSec=30"])
    return files


def write(files: Dict[str, str], out: Path) -> Tuple[List[str], List[str]]:
    """Write C{files} under C{out}, each private (0600) from the start; a
    file that exists is kept as it is.  The names written, and kept."""
    written, kept = [], []
    for name, text in files.items():
        path = Path(out) / name
        path.parent.mkdir(parents=True, exist_ok=True)
        (written if create_private(path, text) else kept).append(name)
    return written, kept


@dataclass(frozen=True)
class Service:
    """How a rendered systemd unit starts its process."""

    command: List[str]
    user: str
    environment: Dict[str, str]


def read_environment(text: str) -> Dict[str, str]:
    """The variables of a systemd environment file (KEY="VALUE" lines)."""
    environment = {}
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#") and "=" in line:
            key, value = line.split("=", 1)
            environment[key.strip()] = value.strip().strip('"')
    return environment


def service(unit: Path) -> Service:
    """The process a rendered unit file starts: its command line, user and
    environment (from its EnvironmentFile)."""
    parser = configparser.ConfigParser(interpolation=None, strict=False)
    parser.optionxform = str
    parser.read_string(unit.read_text())
    section = parser["Service"]
    environment = {}
    if "EnvironmentFile" in section:
        environment = read_environment(Path(section["EnvironmentFile"]).read_text())
    return Service(shlex.split(section["ExecStart"]), section.get("User", "root"), environment)
