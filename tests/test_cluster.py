"""The replicated deployment, operated as a DBA would, on one cluster
brought up once: a switchover and a rolling restart of every frontend
under load; the primary's host killed under load and browsing buyers (their reads answered by the
standbys meanwhile, their carts showing every acknowledged addition) and
brought back (as a replica, rewound) with a killed frontend; a replica whose data folder is
gone cloned again; then the whole cluster taken down and brought back,
and killed outright and brought back.  After each step, nothing any client
was told is lost or done twice, and no client saw an error.

A real cluster (marketplace.cluster: three PostgreSQL nodes under Patroni
and etcd, two frontends per service, each host a network namespace,
started from the files marketplace-cluster render writes) is used.  Its
links are TLS: what crosses them in clear, or without the cluster's
certificates, is refused.  Needs
root for the namespaces (CI runs as root).  The waits are printed, not
asserted (make reliability measures them against their targets), but for
the browsing buyers' through the primary's failure, which the issue that
made the standbys answer reads asked the test to hold to 1 s.
"""

import base64
import datetime
import json
import os
import pwd
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import psycopg2
from twisted.internet import defer, reactor, threads
from twisted.trial import unittest

from marketplace.cluster import backups, certs, evaluate, hosts, launch, operate, render
from marketplace.cluster import report as evaluation
from marketplace.cluster.topology import ETCD_CLIENT_PORT, SERVICE_PORTS, SETTLE_AFTER
from marketplace.postgres import roles

#: Run in a frontend host, as its daemon's user with its daemon's
#: environment: what the daemon's connection may do (each statement in a
#: transaction of its own), and whether it reaches the other database.
_AS_A_DAEMON = """
import json, os, sys
import psycopg2
from psycopg2.extensions import make_dsn
dsn, other, statements = os.environ[sys.argv[1]], sys.argv[2], json.loads(sys.argv[3])
found = {}
connection = psycopg2.connect(dsn)
connection.autocommit = True
for statement in statements:
    try:
        with connection.cursor() as cursor:
            cursor.execute(statement)
        found[statement] = "ok"
    except psycopg2.Error as e:
        found[statement] = e.pgcode or "error"
try:
    psycopg2.connect(make_dsn(dsn, dbname=other)).close()
    found["connect " + other] = "ok"
except psycopg2.Error:
    found["connect " + other] = "refused"
print(json.dumps(found))
"""


#: Tables whose every row a restore must bring back as it was.
_RESTORED = {"marketplace": ("accounts", "items", "active_cart_lines", "purchases"),
             "payments": ("authorizations",)}


def _contents(plan) -> dict:
    """Every row of the L{_RESTORED} tables of C{plan}'s cluster."""
    import psycopg2

    found = {}
    for database, tables in _RESTORED.items():
        connection = psycopg2.connect(plan.database_dsn(database))
        try:
            with connection.cursor() as cursor:
                for table in tables:
                    cursor.execute(f"SELECT row_to_json(t)::text FROM {table} AS t")
                    found[table] = sorted(row for (row,) in cursor.fetchall())
        finally:
            connection.close()
    return found


def _the_mistake(plan) -> datetime.datetime:
    """An operator's DELETE of every cart line; when it began."""
    import psycopg2

    # The writes before it ended a second before it begins: a restore to
    # half a second before it has them all.
    time.sleep(1.0)
    connection = psycopg2.connect(plan.database_dsn("marketplace"))
    try:
        with connection, connection.cursor() as cursor:
            cursor.execute("SELECT now()")
            (began,) = cursor.fetchone()
            time.sleep(1.0)  # a restore to half a second before: before it all
            cursor.execute("DELETE FROM active_cart_lines")
    finally:
        connection.close()
    return began


def _kill_everything(plan) -> None:
    """SIGKILL every process of every host: a power cut."""
    for host in plan.hosts:
        hosts.kill(plan, host)


def _etcd(plan, path: str, body: dict, context: ssl.SSLContext) -> dict:
    """POST C{body} to etcd's v3 JSON API on the first database host."""
    address = plan.by_role("database")[0].address
    request = urllib.request.Request(f"https://{address}:{ETCD_CLIENT_PORT}{path}",
                                     data=json.dumps(body).encode())
    with urllib.request.urlopen(request, timeout=3, context=context) as answer:
        return json.loads(answer.read())


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def _probe_links(plan, scratch: Path) -> dict:
    """What a stranger on the hosts' network gets from each link, and what
    PostgreSQL says of its connections."""
    found = {}
    ca_file = str(plan.folder / certs.CA_CERT)
    read = ("/v3/kv/range", {"key": _b64("/service/"), "range_end": _b64("/service0"),
                             "keys_only": True})
    write = ("/v3/kv/put", {"key": _b64("/service/marketplace/intruder"), "value": _b64("x")})
    # etcd, without a client certificate (but trusting the right CA), then
    # with one from another CA, then as the operator.
    another = certs.Authority.create("another CA")
    cert, key = another.issue("intruder", [], certs.CLIENT)
    (scratch / "intruder.pem").write_text(cert)
    (scratch / "intruder.key").write_text(key)
    (scratch / "another-ca.pem").write_text(another.cert_pem)
    anonymous = ssl.create_default_context(cafile=ca_file)
    stranger = ssl.create_default_context(cafile=ca_file)
    stranger.load_cert_chain(scratch / "intruder.pem", scratch / "intruder.key")
    for who, context in (("anonymous", anonymous), ("another CA", stranger)):
        for what, (path, body) in (("read", read), ("write", write)):
            try:
                _etcd(plan, path, body, context)
                found[f"etcd {what}, {who}"] = "accepted"
            except OSError as e:
                found[f"etcd {what}, {who}"] = str(e)
    operator = certs.client_context(str(plan.folder))
    found["etcd keys, operator"] = [base64.b64decode(kv["key"]).decode()
                                    for kv in _etcd(plan, *read, operator).get("kvs", [])]
    # PostgreSQL: in clear, and trusting another CA.
    dsn = plan.database_dsn("postgres")
    for what, changed in (("in clear", dsn.replace("sslmode=verify-full", "sslmode=disable")),
                          ("another CA", dsn.replace(ca_file, str(scratch / "another-ca.pem")))):
        try:
            psycopg2.connect(changed).close()
            found[f"postgres {what}"] = "accepted"
        except psycopg2.Error as e:
            found[f"postgres {what}"] = str(e)
    # Payments, in clear: a framed request, which a TLS server cannot read.
    payments = plan.by_role("payments")[0]
    with socket.create_connection((payments.address, SERVICE_PORTS["payments"]), 3) as raw:
        raw.settimeout(3)
        raw.sendall(len(b"{}").to_bytes(4, "big") + b"{}")
        try:
            found["payments in clear"] = raw.recv(100)
        except OSError as e:
            found["payments in clear"] = str(e)
    connection = psycopg2.connect(dsn)
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT a.backend_type, host(a.client_addr), s.ssl"
                           " FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid)"
                           " WHERE a.client_addr IS NOT NULL")
            found["connections"] = cursor.fetchall()
    finally:
        connection.close()
    return found


class OperationsTests(unittest.TestCase):
    timeout = 600

    def setUp(self):
        if os.geteuid() != 0:
            raise unittest.SkipTest("a cluster needs root (network namespaces)")
        if not list(launch.DEBIAN_POSTGRES.glob("*/bin/postgres")):
            # (make test installs it as root; only where that failed)
            raise unittest.SkipTest("a cluster needs Debian's PostgreSQL: apt-get install postgresql")
        self.folder = Path(tempfile.mkdtemp(prefix="marketplace-cluster-"))
        down = []

        def take_down():
            if down:
                return None
            down.append(True)
            d = threads.deferToThread(launch.down, self.folder)
            return d.addBoth(lambda _: shutil.rmtree(self.folder, ignore_errors=True))

        # Taken down even when bringing it up fails half-way (or by the
        # test's last step, L{check_restore}, with the restored cluster).
        self.take_down = take_down
        self.addCleanup(take_down)
        # load_testing: the clients all sign up from this machine's address.
        d = threads.deferToThread(launch.up, self.folder, load_testing=True)
        return d.addCallback(lambda plan: setattr(self, "plan", plan))

    async def settled(self, load: evaluate.Load) -> dict:
        """The invariants of C{load}'s run once the sweeps settled it."""
        plan = self.plan
        return await evaluation.settled_invariants(
            reactor, load, plan.database_dsn("marketplace"), plan.database_dsn("payments"),
            evaluation.settle_wait(SETTLE_AFTER))

    async def under_load(self, what: str, change, seconds: float = 3.0,
                         at: float = 1.0) -> evaluate.Load:
        """Run the clients for about C{seconds} plus however long C{change}
        (run in a thread C{at} seconds in) takes; check that no client saw
        an error and that everything they were told holds."""
        load = evaluate.Load(reactor, self.population, clients=3)
        await load.set_up()
        try:
            await load.run(seconds, at, change)
            invariants = await self.settled(load)
        finally:
            await load.close()
        wait = load.longest_gap(load.failure_started)
        before = load.longest_gap(load.started, load.failure_started)
        print(f"\n{what}: longest wait {wait:.2f} s (before it: {before:.2f} s),"
              f" {len(load.calls)} calls,"
              f" errors {load.errors()}, invariants {invariants}")
        self.assertEqual(load.errors(), {})
        self.assertEqual(invariants, {key: 0 for key in invariants})
        self.assertTrue(load.ledger.purchases, "no purchase was acknowledged")
        return load

    async def test_operations_in_order(self):
        plan = self.plan
        self.population = evaluate.Population(
            reactor,
            [plan.endpoint(h) for h in plan.by_role("seller")],
            [plan.endpoint(h) for h in plan.by_role("buyer")],
        )
        await self.check_rendered_patroni_files()
        await self.check_links_are_tls()
        await self.check_no_process_runs_as_root()
        await self.check_one_etcd_leader()
        await self.check_least_privilege()
        await self.check_switchover()
        backup_id = await threads.deferToThread(backups.take, plan)
        await self.check_roll()
        last = await self.check_primary_killed_and_started_again()
        await self.check_replace()
        await self.check_restart(last)
        # Last: its mistake clears the carts the checks before hold.
        await self.check_restore(backup_id)

    async def check_rendered_patroni_files(self):
        """What started the cluster is what Patroni itself accepts."""
        patroni = Path(sys.prefix) / "bin" / "patroni"
        for host in self.plan.by_role("database"):
            config = self.plan.folder / host.name / "patroni.yml"
            # Inside the host (its etcd reachable); its ports are taken by
            # the Patroni and PostgreSQL already running there.
            checked = await threads.deferToThread(
                subprocess.run,
                ["ip", "netns", "exec", host.namespace(self.plan.cluster_id), str(patroni),
                 "--validate-config", "--ignore-listen-port", str(config)],
                capture_output=True, text=True)
            self.assertEqual((checked.returncode, checked.stdout + checked.stderr), (0, ""))

    async def check_links_are_tls(self):
        """PostgreSQL, etcd and payments refuse what comes in clear or
        without the cluster's certificates; every connection the daemons
        and the replicas hold is TLS."""
        plan = self.plan
        scratch = Path(tempfile.mkdtemp(prefix="marketplace-tls-"))
        self.addCleanup(shutil.rmtree, scratch, ignore_errors=True)
        found = await threads.deferToThread(_probe_links, plan, scratch)
        for who in ("anonymous", "another CA"):
            for what in ("read", "write"):
                # Refused in the handshake: etcd wants a certificate of its CA.
                self.assertIn("bad certificate", found[f"etcd {what}, {who}"])
        self.assertTrue(found["etcd keys, operator"])
        self.assertNotIn("/service/marketplace/intruder", found["etcd keys, operator"])
        self.assertIn("no encryption", found["postgres in clear"])
        self.assertIn("certificate verify failed", found["postgres another CA"])
        # Closed without a word: no answer in clear.
        self.assertIn(found["payments in clear"], (b"", "[Errno 104] Connection reset by peer"))
        clients = {(kind, address) for kind, address, _ in found["connections"]}
        frontends = {h.address for h in plan.hosts if h.role != "database"}
        replicas = {h.address for h in plan.by_role("database")} - {
            (await threads.deferToThread(launch.primary, plan)).address}
        self.assertTrue({("client backend", a) for a in frontends} <= clients)
        self.assertTrue({("walsender", a) for a in replicas} <= clients)
        self.assertEqual({tls for _, _, tls in found["connections"]}, {True})

    async def check_no_process_runs_as_root(self):
        """etcd, Patroni, PostgreSQL and the daemons run as system users."""
        as_root = []
        for host in self.plan.hosts:
            found = await threads.deferToThread(hosts.pids, self.plan, host)
            self.assertTrue(found, f"nothing runs on {host.name}")
            for pid in found:
                status = Path(f"/proc/{pid}/status").read_text()
                uids = next(line for line in status.splitlines() if line.startswith("Uid:"))
                if "0" in uids.split()[1:]:
                    as_root.append(f"{host.name}: {hosts._command_line(pid)[:80]}")
        self.assertEqual(as_root, [])

    async def check_one_etcd_leader(self):
        """down stops etcd's leader last: it is found."""
        leads = [await threads.deferToThread(launch.etcd_leads, self.plan, host)
                 for host in self.plan.by_role("database")]
        self.assertEqual(sorted(leads), [False, False, True])

    async def as_daemon(self, host, variable: str, other: str, statements) -> dict:
        """What C{statements} do on the connection of C{host}'s daemon."""
        unit = render.service(self.plan.folder / host.name / render.unit_name(host.role))
        entry = pwd.getpwnam(unit.user)
        ran = await threads.deferToThread(
            subprocess.run,
            ["ip", "netns", "exec", host.namespace(self.plan.cluster_id), "setpriv",
             f"--reuid={entry.pw_uid}", f"--regid={entry.pw_gid}", "--init-groups", "--",
             sys.executable, "-c", _AS_A_DAEMON, variable, other, json.dumps(statements)],
            capture_output=True, text=True, env={**unit.environment, "PATH": os.environ["PATH"]},
            cwd=str(self.plan.folder / host.name))
        self.assertEqual(ran.returncode, 0, ran.stderr)
        return json.loads(ran.stdout)

    async def check_least_privilege(self):
        """Each daemon's role may use its own service's rows and nothing
        else: no DROP TABLE, no other service's database, no program run
        by the server, no new role; and the daemons' connections are of
        those roles alone."""
        denied = "42501"  # insufficient_privilege
        harmful = ["COPY (SELECT 1) TO PROGRAM 'true'", "CREATE ROLE intruder SUPERUSER"]
        shop = await self.as_daemon(
            self.plan.host("buyer1"), "MARKETPLACE_CUSTOMER_DB", "payments",
            ["SELECT count(*) FROM accounts", "SELECT count(*) FROM items",
             "DROP TABLE items", "CREATE TABLE extra (x int)", *harmful])
        self.assertEqual(shop, {
            "SELECT count(*) FROM accounts": "ok", "SELECT count(*) FROM items": "ok",
            "DROP TABLE items": denied, "CREATE TABLE extra (x int)": denied,
            **{statement: denied for statement in harmful}, "connect payments": "refused"})
        payments = await self.as_daemon(
            self.plan.host("payments1"), "MARKETPLACE_PAYMENTS_DB", "marketplace",
            ["SELECT count(*) FROM authorizations", "DROP TABLE authorizations", *harmful])
        self.assertEqual(payments, {
            "SELECT count(*) FROM authorizations": "ok", "DROP TABLE authorizations": denied,
            **{statement: denied for statement in harmful}, "connect marketplace": "refused"})

        def connected_as():
            import psycopg2

            connection = psycopg2.connect(self.plan.database_dsn("postgres"))
            try:
                with connection.cursor() as cursor:
                    cursor.execute("SELECT DISTINCT usename, datname FROM pg_stat_activity"
                                   " WHERE client_addr IS NOT NULL AND usename <> 'replicator'"
                                   " AND client_addr <> inet_client_addr()")
                    return set(cursor.fetchall())
            finally:
                connection.close()

        self.assertEqual(await threads.deferToThread(connected_as), {
            (roles.SHOP, "marketplace"), (roles.PAYMENTS, "payments")})

    async def check_switchover(self):
        old = await threads.deferToThread(launch.primary, self.plan)
        chosen = {}

        def switch():
            chosen["new"] = operate.switchover(self.plan)

        await self.under_load("switchover", switch)
        self.assertNotEqual(chosen["new"], old)
        self.assertEqual(await threads.deferToThread(launch.primary, self.plan), chosen["new"])

    async def check_roll(self):
        took = []
        await self.under_load("rolling restart", lambda: took.extend(operate.roll(self.plan)))
        self.assertEqual(len(took), 6)
        print(f"each frontend restarted and ready in {', '.join(f'{t:.1f}' for t in took)} s")

    async def check_primary_killed_and_started_again(self) -> evaluate.Load:
        """The primary's host killed under load (the lease runs out, the
        synchronous standby is promoted); then it and a killed frontend are
        started again: the old primary comes back as a replica (rewound)."""
        plan = self.plan
        old = await threads.deferToThread(launch.primary, plan)
        load = evaluate.Load(reactor, self.population, clients=3, browsers=3)
        await load.set_up()
        failed_at = await load.run(32.0, 2.0, lambda: hosts.kill(plan, old))
        new = await threads.deferToThread(launch.primary, plan)
        self.assertNotIn(new, (None, old))
        # Browsing buyers read on through the failover (the standbys answer),
        # and each DisplayCart held every addition acknowledged before it.
        browse = load.browse_gap(load.failure_started)
        reads = [c for c in load.calls if c.client.startswith("r") and c.code == "OK"
                 and failed_at < c.started and c.ended < failed_at + 15]
        print(f"\nbrowsing through the primary's failure: longest wait {browse:.2f} s,"
              f" {len(reads)} reads answered in the 15 s after it,"
              f" stale carts {load.stale_carts}")
        self.assertEqual(load.stale_carts, 0)
        self.assertTrue(any(c.api == "DisplayCart" for c in reads), "no cart shown meanwhile")
        self.assertLessEqual(browse, 1.0)
        back = [c.ended - failed_at for c in load.calls
                if c.started > failed_at and c.code == "OK" and c.api == "AddItemToCart"]
        self.assertTrue(back, "no cart addition succeeded after the primary was killed")
        frontend = plan.host("buyer1")
        await threads.deferToThread(hosts.kill, plan, frontend)
        database = await threads.deferToThread(operate.start_host, plan, old)
        daemon = await threads.deferToThread(operate.start_host, plan, frontend)
        print(f"\nprimary {old.name} killed; first cart addition after {min(back):.1f} s;"
              f" new primary {new.name}; {old.name} streaming again after {database:.1f} s,"
              f" buyer1 ready after {daemon:.1f} s")
        self.assertEqual(await threads.deferToThread(launch.primary, plan), new)
        self.assertTrue(await threads.deferToThread(launch.streaming, plan, old))
        try:
            invariants = await self.settled(load)
        finally:
            await load.close()
        self.assertEqual(invariants, {key: 0 for key in invariants})
        self.assertTrue(load.ledger.purchases, "no purchase was acknowledged")
        return load

    async def check_restore(self, backup_id: str):
        """The promise of the backups: acknowledged writes, a backup, more
        acknowledged writes (the primary killed among them: the WAL is
        archived by one node, then another; the cluster restarted twice),
        then a mistake (every cart cleared) at time T; a new cluster restored to just before T has
        every write acknowledged before T and none of the mistake."""
        plan = self.plan
        load = evaluate.Load(reactor, self.population, clients=2)
        await load.set_up()
        try:
            await load.run(2.0, 1.0, lambda: None)
            # A line in each cart for sure (a purchase may just have
            # emptied it), acknowledged.
            for i, buyer in enumerate(load.buyers):
                item = load.items[i]
                await buyer.add_item_to_cart(item, 1)
                load.ledger.carts[i].setdefault(item, [0, 0])[0] += 1
            carts = await load.carts_now()
        finally:
            await load.close()
        before = await threads.deferToThread(_contents, plan)
        self.assertTrue(before["active_cart_lines"], "no cart line to lose")
        mistake_at = await threads.deferToThread(_the_mistake, plan)
        self.assertEqual(await threads.deferToThread(_contents, plan),
                         {**before, "active_cart_lines": []})
        listed = await threads.deferToThread(backups.listing, plan)
        self.assertIn(backup_id, [b["id"] for b in listed])

        folder = Path(tempfile.mkdtemp(prefix="marketplace-restored-"))
        folder.rmdir()

        def take_down():
            d = threads.deferToThread(launch.down, folder)
            d.addErrback(lambda _: None)
            return d.addBoth(lambda _: shutil.rmtree(folder, ignore_errors=True))

        self.addCleanup(take_down)
        started = time.monotonic()
        restored = await threads.deferToThread(
            backups.restore, folder, plan.folder, mistake_at - datetime.timedelta(seconds=0.5))
        took = time.monotonic() - started
        after = await threads.deferToThread(_contents, restored)
        found = await threads.deferToThread(
            evaluate.check_invariants, load.ledger, carts,
            restored.database_dsn("marketplace"), restored.database_dsn("payments"))
        print(f"\nrestored to just before the mistake into a new cluster in {took:.1f} s;"
              f" invariants {found}")
        self.assertEqual(after, before)
        self.assertEqual(found, {key: 0 for key in found})
        # The test's last step: both clusters go down at once.
        await defer.gatherResults([take_down(), self.take_down()])

    async def check_replace(self):
        plan = self.plan
        leader = await threads.deferToThread(launch.primary, plan)
        replica = next(h for h in plan.by_role("database") if h != leader)
        data = plan.folder / replica.name / "postgresql"
        marker = (data / "PG_VERSION").stat().st_ino
        shutil.rmtree(data, ignore_errors=True)  # the disk is gone
        took = await threads.deferToThread(operate.replace_host, plan, replica)
        print(f"\n{replica.name} cloned again and streaming after {took:.1f} s")
        self.assertTrue(await threads.deferToThread(launch.streaming, plan, replica))
        self.assertNotEqual((data / "PG_VERSION").stat().st_ino, marker)

    async def check_restart(self, load: evaluate.Load):
        """down then up, and every process killed then up: every write the
        clients were told of is there again."""
        plan = self.plan
        for how, stop in (("down", lambda: launch.down(self.folder)),
                          ("every process killed", lambda: _kill_everything(plan))):
            await threads.deferToThread(stop)
            started = time.monotonic()
            await threads.deferToThread(launch.up, self.folder)
            took = time.monotonic() - started
            # The same buyers, on new connections (their carts as they were).
            load.sellers = []
            load.buyers = [self.population.client("buyer", i) for i in range(load.clients)]
            try:
                found = await threads.deferToThread(
                    evaluate.check_invariants, load.ledger, await load.carts_now(),
                    plan.database_dsn("marketplace"), plan.database_dsn("payments"))
            finally:
                await load.close()
            print(f"\n{how}, then up: back in {took:.1f} s; invariants {found}")
            self.assertEqual(found, {key: 0 for key in found})
