"""The parts of the replicated deployment that need no machine: the plan
of a cluster and how a pool reads a connection string naming several
hosts."""

from pathlib import Path

from psycopg2.extensions import parse_dsn
from twisted.trial.unittest import SynchronousTestCase

from marketplace.cluster.topology import Plan
from marketplace.postgres.database import host_candidates


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
        config = self.plan.patroni_config(self.plan.host("db1"), "/bin")
        self.assertIs(config["bootstrap"]["dcs"]["synchronous_mode"], True)
        self.assertEqual(
            config["bootstrap"]["dcs"]["postgresql"]["parameters"]["synchronous_commit"], "on")

    def test_secrets_stay_off_the_command_line(self):
        for host in self.plan.hosts:
            if host.role == "database":
                continue
            command = " ".join(self.plan.daemon_command(host, "twistd", self.plan.host("payments1")))
            self.assertNotIn(self.plan.superuser_password, command)
            self.assertNotIn(self.plan.payments_secret, command)
        buyer = self.plan.daemon_environment(self.plan.host("buyer1"))
        payments = self.plan.daemon_environment(self.plan.host("payments1"))
        self.assertEqual(buyer["MARKETPLACE_PAYMENTS_SECRET"], payments["MARKETPLACE_PAYMENTS_SECRET"])
