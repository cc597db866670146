"""The parts of the replicated deployment that need no machine: the plan
of a cluster, the files rendered for its hosts (every link TLS), its
settings and CA kept once, and how a pool reads a connection string
naming several hosts."""

import os
import shutil
import stat
import subprocess
import tempfile
from pathlib import Path

import yaml
from psycopg2.extensions import parse_dsn
from twisted.trial.unittest import SkipTest, SynchronousTestCase

from cryptography import x509

from marketplace.cluster import certs, launch, render, settings
from marketplace.cluster.topology import Plan
from marketplace.postgres import roles

#: The service roles' passwords, as rolescli.passwords_in gives them.
PASSWORDS = {role: f"pw-of-{role}" for role in roles.ROLES}
from marketplace.postgres.database import host_candidates

EXAMPLE = Path(__file__).parent.parent / "docs" / "reliability" / "hosts.example"
#: One CA for every test here (making keys is quick, but not free).
AUTHORITY = certs.Authority.create()


class HostCandidateTests(SynchronousTestCase):
    def test_one_connection_string_per_host(self):
        dsn = ("host=10.0.0.1,10.0.0.2 port=5432,6432 dbname=m user=u password=p"
               " target_session_attrs=read-write")
        candidates = [parse_dsn(c) for c in host_candidates(dsn)]
        self.assertEqual([(c["host"], c["port"]) for c in candidates],
                         [("10.0.0.1", "5432"), ("10.0.0.2", "6432")])
        for c in candidates:
            self.assertEqual(c["target_session_attrs"], "read-write")
            self.assertEqual((c["dbname"], c["user"], c["password"]), ("m", "u", "p"))

    def test_one_port_for_every_host(self):
        candidates = [parse_dsn(c) for c in host_candidates("host=a,b port=7 dbname=m")]
        self.assertEqual([(c["host"], c["port"]) for c in candidates], [("a", "7"), ("b", "7")])

    def test_a_single_host_is_left_as_it_is(self):
        self.assertEqual(host_candidates("dbname=m host=/tmp"), ["dbname=m host=/tmp"])
        self.assertEqual(host_candidates("dbname=m"), ["dbname=m"])


class PlanTests(SynchronousTestCase):
    def setUp(self):
        self.plan = Plan(123, Path("/tmp/x"))

    def test_hosts_and_addresses(self):
        names = [h.name for h in self.plan.hosts]
        self.assertEqual(names, ["db1", "db2", "db3", "buyer1", "buyer2", "seller1",
                                 "seller2", "payments1", "payments2"])
        addresses = [h.address for h in self.plan.hosts]
        self.assertEqual(len(set(addresses)), len(addresses))
        self.assertTrue(all(a.startswith("10.77.123.") for a in addresses))

    def test_every_database_host_in_the_connection_string(self):
        dsn = parse_dsn(self.plan.database_dsn("marketplace"))
        self.assertEqual(dsn["host"], "10.77.123.11,10.77.123.12,10.77.123.13")
        self.assertEqual(dsn["target_session_attrs"], "read-write")

    def test_synchronous_replication(self):
        machines = self.plan.machines()
        config = render.patroni_config(self.plan, machines, machines[0], render.Layout())
        self.assertIs(config["bootstrap"]["dcs"]["synchronous_mode"], True)
        # Every replica synchronous, each commit applied there before it
        # is acknowledged: a standby answering reads has every write.
        self.assertEqual(config["bootstrap"]["dcs"]["synchronous_node_count"], 2)
        self.assertEqual(
            config["bootstrap"]["dcs"]["postgresql"]["parameters"]["synchronous_commit"],
            "remote_apply")

    def test_secrets_stay_off_the_command_line(self):
        files = render.render(self.plan, self.plan.machines(), passwords=PASSWORDS,
                              authority=AUTHORITY)
        for name, text in files.items():
            if name.endswith(".service"):
                self.assertNotIn(self.plan.superuser_password, text)
                self.assertNotIn(self.plan.payments_secret, text)
        buyer = render.read_environment(files["buyer1/buyer.env"])
        payments = render.read_environment(files["payments1/payments.env"])
        self.assertEqual(buyer["MARKETPLACE_PAYMENTS_SECRET"], payments["MARKETPLACE_PAYMENTS_SECRET"])


class RenderTests(SynchronousTestCase):
    """marketplace-cluster render: a hosts file to every host's files."""

    def setUp(self):
        self.machines, self.network = render.parse_hosts(EXAMPLE.read_text())
        self.settings = settings.Settings(network=self.network)
        self.files = render.render(self.settings, self.machines, passwords=PASSWORDS,
                                   authority=AUTHORITY)

    def test_the_files_of_each_host(self):
        by_host = {}
        for name in self.files:
            host, file = name.split("/", 1)
            by_host.setdefault(host, set()).add(file)
        database = {"etcd.yml", "patroni.yml", "marketplace-etcd.service",
                    "marketplace-patroni.service", "tls/ca/ca.pem", "tls/etcd.pem",
                    "tls/etcd.key", "tls/patroni.pem", "tls/patroni.key"}
        web = {"buyer.env", "marketplace-buyer.service", "seller.env",
               "marketplace-seller.service", "pgpass", "tls/ca/ca.pem"}
        pay = {"payments.env", "marketplace-payments.service", "pgpass", "tls/ca/ca.pem",
               "tls/payments.pem", "tls/payments.key"}
        self.assertEqual(by_host, {"db1": database, "db2": database, "db3": database,
                                   "web1": web, "web2": web, "pay1": pay, "pay2": pay})

    def test_every_host_agrees(self):
        patroni = yaml.safe_load(self.files["db2/patroni.yml"])
        etcd = yaml.safe_load(self.files["db2/etcd.yml"])
        self.assertEqual(patroni["etcd3"]["hosts"],
                         "10.0.0.11:2379,10.0.0.12:2379,10.0.0.13:2379")
        self.assertEqual(patroni["restapi"]["connect_address"], "10.0.0.12:8008")
        self.assertEqual(etcd["initial-cluster"], "db1=https://10.0.0.11:2380,"
                         "db2=https://10.0.0.12:2380,db3=https://10.0.0.13:2380")
        dsn = parse_dsn(render.read_environment(self.files["web1/seller.env"])
                        ["MARKETPLACE_PRODUCT_DB"])
        self.assertEqual(dsn["host"], "10.0.0.11,10.0.0.12,10.0.0.13")

    def test_each_daemon_connects_as_its_service_role(self):
        """Never as the superuser: with its service's role, whose password
        is in the host's password file, alone."""
        for env, variable, role, database in (
                ("web1/seller.env", "MARKETPLACE_PRODUCT_DB", roles.SHOP, "marketplace"),
                ("web1/buyer.env", "MARKETPLACE_CUSTOMER_DB", roles.SHOP, "marketplace"),
                ("pay2/payments.env", "MARKETPLACE_PAYMENTS_DB", roles.PAYMENTS, "payments")):
            dsn = parse_dsn(render.read_environment(self.files[env])[variable])
            self.assertEqual((dsn["user"], dsn["dbname"], dsn["passfile"]),
                             (role, database, f"/etc/marketplace/pgpass"))
            self.assertNotIn("password", dsn)
            host = env.split("/")[0]
            self.assertEqual(roles.parse_pgpass(self.files[f"{host}/pgpass"]),
                             {role: PASSWORDS[role]})
        for name, text in self.files.items():
            if not name.startswith("db"):
                self.assertNotIn(self.settings.superuser_password, text)

    def test_each_role_only_from_its_hosts(self):
        hba = yaml.safe_load(self.files["db1/patroni.yml"])["postgresql"]["pg_hba"]
        self.assertEqual([line for line in hba if roles.SHOP in line], [
            f"hostssl marketplace {roles.SHOP} 10.0.0.21/32 scram-sha-256",
            f"hostssl marketplace {roles.SHOP} 10.0.0.22/32 scram-sha-256"])
        self.assertEqual([line for line in hba if roles.PAYMENTS in line], [
            f"hostssl payments {roles.PAYMENTS} 10.0.0.31/32 scram-sha-256",
            f"hostssl payments {roles.PAYMENTS} 10.0.0.32/32 scram-sha-256"])
        self.assertEqual([line for line in hba if "replication" in line], [
            *(f"hostssl replication replicator 10.0.0.{n}/32 scram-sha-256" for n in (11, 12, 13)),
            "hostssl replication replicator 10.0.0.0/24 scram-sha-256"])
        self.assertNotIn("hostssl all all", " ".join(hba))

    def test_units_start_what_they_say(self):
        with tempfile.TemporaryDirectory() as out:
            render.write(self.files, Path(out))
            unit = Path(out) / "web2" / "marketplace-buyer.service"
            # The unit names its environment file where it is on the host.
            text = unit.read_text().replace("/etc/marketplace", f"{out}/web2")
            unit.write_text(text)
            service = render.service(unit)
        self.assertEqual(service.user, "marketplace")
        self.assertEqual(service.command[:5], ["/opt/marketplace/bin/twistd", "--nodaemon",
                                               "--pidfile=", "--logfile=-", "marketplace-buyer"])
        # Each buyer starts with the payments daemon of its own number.
        # (over TLS, trusting only the CA in the host's tls/ca/)
        ca = f"{out}/web2/tls/ca"
        self.assertIn(f"--payments=tls:host=10.0.0.32:port=8082:trustRoots={ca}"
                      f"|tls:host=10.0.0.31:port=8082:trustRoots={ca}", service.command)
        self.assertNotIn("--signups-per-address=100000", service.command)
        self.assertEqual(service.environment["MARKETPLACE_PAYMENTS_SECRET"],
                         self.settings.payments_secret)

    def test_every_file_private_and_kept(self):
        with tempfile.TemporaryDirectory() as out:
            written, kept = render.write(self.files, Path(out))
            self.assertEqual((len(written), kept), (len(self.files), []))
            for name in written:
                self.assertEqual(stat.S_IMODE(os.stat(Path(out) / name).st_mode), 0o600)
            (Path(out) / "db1" / "patroni.yml").write_text("edited by hand\n")
            written, kept = render.write(self.files, Path(out))
            self.assertEqual((written, len(kept)), ([], len(self.files)))
            self.assertEqual((Path(out) / "db1" / "patroni.yml").read_text(), "edited by hand\n")

    def test_bad_hosts_files(self):
        for text, complaint in (
                ("db1 10.0.0.1 database\ndb2 10.0.0.2 database\n", "odd number"),
                (EXAMPLE.read_text() + "x 10.0.0.9 cashier\n", "unknown role 'cashier'"),
                (EXAMPLE.read_text() + "db1 10.0.0.9 buyer\n", "listed twice"),
                (EXAMPLE.read_text() + "lonely\n", "line 14"),
        ):
            with self.assertRaises(render.HostsFileError) as raised:
                render.parse_hosts(text)
            self.assertIn(complaint, str(raised.exception))


class TlsRenderTests(SynchronousTestCase):
    """Every link between hosts is TLS, each side checked against the
    cluster's CA (docs/SECURITY.md, "The cluster's links")."""

    def setUp(self):
        self.machines, network = render.parse_hosts(EXAMPLE.read_text())
        self.settings = settings.Settings(network=network)
        self.files = render.render(self.settings, self.machines, passwords=PASSWORDS,
                                   authority=AUTHORITY)
        self.ca = "/etc/marketplace/tls/ca/ca.pem"

    def test_postgresql_takes_only_tls_from_other_hosts(self):
        patroni = yaml.safe_load(self.files["db1/patroni.yml"])
        postgresql = patroni["postgresql"]
        self.assertEqual(postgresql["parameters"]["ssl"], "on")
        self.assertEqual(postgresql["parameters"]["ssl_key_file"],
                         "/etc/marketplace/tls/patroni.key")
        for line in postgresql["pg_hba"]:
            self.assertTrue(line.startswith(("local ", "hostssl ")), line)
        # Patroni's own connections to the other nodes check the server.
        for user in ("superuser", "replication", "rewind"):
            self.assertEqual(
                {k: postgresql["authentication"][user][k] for k in ("sslmode", "sslrootcert")},
                {"sslmode": "verify-full", "sslrootcert": self.ca})

    def test_the_daemons_check_the_database_server(self):
        for name in ("web1/seller.env", "web1/buyer.env", "pay1/payments.env"):
            for key, value in render.read_environment(self.files[name]).items():
                if key.endswith("_DB"):
                    dsn = parse_dsn(value)
                    self.assertEqual((dsn["sslmode"], dsn["sslrootcert"]),
                                     ("verify-full", self.ca))

    def test_etcd_demands_client_certificates(self):
        etcd = yaml.safe_load(self.files["db3/etcd.yml"])
        for key in ("listen-peer-urls", "listen-client-urls", "advertise-client-urls",
                    "initial-advertise-peer-urls"):
            self.assertTrue(etcd[key].startswith("https://10.0.0.13:"), etcd[key])
        for side in ("client-transport-security", "peer-transport-security"):
            self.assertEqual(etcd[side]["client-cert-auth"], True)
            self.assertEqual(etcd[side]["trusted-ca-file"], self.ca)
        patroni = yaml.safe_load(self.files["db3/patroni.yml"])
        self.assertEqual(patroni["etcd3"]["protocol"], "https")
        self.assertEqual(patroni["etcd3"]["cacert"], self.ca)
        self.assertEqual(patroni["etcd3"]["cert"], "/etc/marketplace/tls/patroni.pem")
        self.assertEqual(patroni["restapi"]["certfile"], "/etc/marketplace/tls/patroni.pem")
        self.assertEqual(patroni["restapi"]["cafile"], self.ca)

    def test_payments_only_over_tls(self):
        unit = self.files["pay2/marketplace-payments.service"]
        self.assertIn("--listen=ssl:8082:interface=10.0.0.32:privateKey=", unit)
        self.assertNotIn("tcp:8082", unit)

    def test_certificates_name_their_host(self):
        ca = x509.load_pem_x509_certificate(AUTHORITY.cert_pem.encode())
        for name, address, usage in (("db2/tls/etcd.pem", "10.0.0.12", "CLIENT_AUTH"),
                                     ("db2/tls/patroni.pem", "10.0.0.12", "CLIENT_AUTH"),
                                     ("pay1/tls/payments.pem", "10.0.0.31", None)):
            cert = x509.load_pem_x509_certificate(self.files[name].encode())
            cert.verify_directly_issued_by(ca)
            names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
            self.assertEqual([str(a) for a in names.get_values_for_type(x509.IPAddress)],
                             [address])
            usages = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
            self.assertIn(x509.oid.ExtendedKeyUsageOID.SERVER_AUTH, usages)
            if usage is None:
                # Only the database hosts' processes may be etcd's clients.
                self.assertNotIn(x509.oid.ExtendedKeyUsageOID.CLIENT_AUTH, usages)
        self.assertEqual(self.files["web1/tls/ca/ca.pem"], AUTHORITY.cert_pem)

    def test_the_ca_is_made_once_and_private(self):
        with tempfile.TemporaryDirectory() as folder:
            first = certs.load_or_create(Path(folder))
            for name in (certs.CA_KEY, certs.OPERATOR_KEY):
                self.assertEqual(stat.S_IMODE((Path(folder) / name).stat().st_mode), 0o600)
            self.assertEqual(certs.load_or_create(Path(folder)), first)
            self.assertEqual(os.listdir(Path(folder) / "tls" / "ca"), ["ca.pem"])


class SettingsTests(SynchronousTestCase):
    """A cluster's secrets are made once, private from the start, and reused."""

    def test_made_once_and_reused(self):
        with tempfile.TemporaryDirectory() as folder:
            first = settings.load_or_create(Path(folder), network="10.1.2.0/24")
            path = Path(folder) / settings.FILE
            self.assertEqual(stat.S_IMODE(path.stat().st_mode), 0o600)
            again = settings.load_or_create(Path(folder))
            self.assertEqual(again, first)
            self.assertEqual(again.network, "10.1.2.0/24")

    def test_private_from_the_start(self):
        """Created with mode 0600, not made private afterwards: no moment
        when another user could open it."""
        with tempfile.TemporaryDirectory() as folder:
            old = os.umask(0)
            try:
                self.assertTrue(settings.create_private(Path(folder) / "x", "secret"))
            finally:
                os.umask(old)
            self.assertEqual(stat.S_IMODE((Path(folder) / "x").stat().st_mode), 0o600)
            self.assertFalse(settings.create_private(Path(folder) / "x", "other"))
            self.assertEqual((Path(folder) / "x").read_text(), "secret")


class LogEndsTests(SynchronousTestCase):
    """A cluster that does not come up says what its hosts' logs said last."""

    def test_the_last_lines_of_each_host(self):
        with tempfile.TemporaryDirectory() as folder:
            plan = Plan(100, Path(folder))
            db1, db2 = plan.by_role("database")[:2]
            (Path(folder) / db1.name).mkdir()
            (Path(folder) / db1.name / "patroni.log").write_text(
                "".join(f"line {n}\n" for n in range(1, 9)))
            error = launch.with_log_ends(
                launch.ClusterError("a PostgreSQL primary did not come up within 120 s"),
                plan, [db1, db2], "patroni.log", lines=3)
        self.assertEqual(str(error), "\n  ".join([
            "a PostgreSQL primary did not come up within 120 s;",
            f"the end of {folder}/{db1.name}/patroni.log:\n    line 6\n    line 7\n    line 8",
            f"the end of {folder}/{db2.name}/patroni.log:",
        ]))


class ProgramsTests(SynchronousTestCase):
    """The hosts' system users reach the virtual environment's programs
    however private the folder of the checkout is."""

    def test_a_checkout_in_a_private_folder(self):
        if os.geteuid() != 0:
            raise SkipTest("opens folders up to / (as a cluster does, as root)")
        private = Path(tempfile.mkdtemp())  # 0700, as mktemp -d makes it
        self.addCleanup(shutil.rmtree, private)
        python = private / "checkout" / ".venv" / "bin" / "python"
        python.parent.mkdir(parents=True)
        python.write_text("")
        python.chmod(0o755)

        def nobody_reads() -> bool:
            return subprocess.run(
                ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                 "test", "-r", str(python)]).returncode == 0

        self.assertFalse(nobody_reads())
        launch.open_programs(python.parent.parent)
        self.assertTrue(nobody_reads())
