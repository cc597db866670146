"""The failure evaluation's load and report without a cluster: its
accounts are made once and kept from run to run, a run's invariants hold
on the real services, and the report sets the cluster's no-failure
throughput against make run's deployment."""

from twisted.internet import defer, reactor
from twisted.internet.error import ConnectionRefusedError
from twisted.internet.interfaces import IStreamClientEndpoint
from twisted.trial import unittest
from zope.interface import implementer

from marketplace.clientlib import endpoint_description
from marketplace.cluster import benchmark, evaluate, observe, report
from tests.support import layout_dsns, layout_of, start_marketplace


class PopulationTests(unittest.TestCase):
    async def run_load(self, population, clients: int) -> evaluate.Load:
        load = evaluate.Load(reactor, population, clients)
        await load.set_up()
        try:
            await load.run(1.0, None, lambda: None)
            dsns = layout_dsns(layout_of(self))
            invariants = await report.settled_invariants(
                reactor, load, dsns["product"], dsns["payments"], 5.0)
        finally:
            await load.close()
        self.assertEqual(invariants, {key: 0 for key in invariants})
        self.assertTrue(load.ledger.purchases, "no purchase was acknowledged")
        return load

    async def test_accounts_are_made_once_and_kept(self):
        market = await start_marketplace(self)
        seller = endpoint_description("127.0.0.1", market.ports["seller"])
        buyer = endpoint_description("127.0.0.1", market.ports["buyer"])
        # Two "frontends" of each service (the same one twice here).
        population = evaluate.Population(reactor, [seller, seller], [buyer, buyer])
        await self.run_load(population, 2)
        self.assertEqual(len(population), 2)
        first = {role: [(a.username, a.items) for a in accounts]
                 for role, accounts in population.accounts.items()}
        for account in population.accounts["seller"]:
            self.assertEqual(len(account.items), evaluate.ITEMS_PER_SELLER)
        # A session that has ended (here: logged out) is opened again.
        client = population.client("buyer", 0)
        ended = client.session_id
        await client.logout()
        await client.close()

        load = await self.run_load(population, 3)
        self.assertEqual(len(population), 3)
        for role, accounts in population.accounts.items():
            self.assertEqual([(a.username, a.items) for a in accounts[:2]], first[role])
        self.assertNotEqual(population.accounts["buyer"][0].session_id, ended)
        # The run used every seller's items, and only this run's purchases
        # were checked.
        self.assertEqual(len(load.items), 3 * evaluate.ITEMS_PER_SELLER)
        self.assertGreaterEqual(len(load.ledger.purchase_keys), len(load.ledger.purchases))


    async def test_browsing_buyers_read_their_own_additions(self):
        market = await start_marketplace(self)
        seller = endpoint_description("127.0.0.1", market.ports["seller"])
        buyer = endpoint_description("127.0.0.1", market.ports["buyer"])
        population = evaluate.Population(reactor, [seller], [buyer])
        load = evaluate.Load(reactor, population, 0, browsers=2)
        await load.set_up()
        try:
            await load.run(1.0, None, lambda: None)
        finally:
            await load.close()
        apis = {c.api for c in load.calls if c.client.startswith("r") and c.code == "OK"}
        self.assertEqual(apis, set(evaluate.BROWSE_APIS))
        self.assertTrue(any(load.browsed_carts.values()), "no addition was acknowledged")
        self.assertEqual(load.stale_carts, 0)
        self.assertEqual(load.errors(), {})
        self.assertLess(load.browse_gap(load.started), 1.0)


def _result(case: str, clients: int, throughput: float) -> dict:
    return {"case": case, "clients": clients, "throughput": throughput, "errors": {},
            "outage": {}, "invariants": {}, "apis": {}, "failed_hosts": []}


class ReportTests(unittest.SynchronousTestCase):
    def test_cluster_against_make_run(self):
        results = [_result("none", 10, 900.0), _result(report.SINGLE, 10, 1500.0),
                   _result("none", 1, 400.0), _result("frontend", 1, 380.0)]
        lines = report.comparison(results)
        self.assertIn("| 10+10 | 900 | 1,500 | 0.60 |", lines)
        # Only scenarios measured on both.
        self.assertEqual([line for line in lines if line.startswith("| 1+1")], [])

    def test_reads_on_the_cluster_against_make_run(self):
        results = [{**_result("reads", 10, 0.0), "reads_per_s": 3000.0},
                   {**_result(report.SINGLE_READS, 10, 0.0), "reads_per_s": 2000.0}]
        self.assertIn("| 10 | 3,000 | 2,000 | 1.50 |", report.read_comparison(results))
        self.assertIn("| 10 | 3,000 | 2,000 | 1.50 |", report.markdown(results))

    def test_rows_by_case_then_clients(self):
        results = [_result(report.SINGLE, 1, 1.0), _result("primary", 1, 1.0),
                   _result("none", 10, 1.0), _result("none", 1, 1.0)]
        ordered = [(r["case"], r["clients"]) for r in report._ordered(results)]
        self.assertEqual(ordered, [("none", 1), ("none", 10), ("primary", 1),
                                   (report.SINGLE, 1)])
        text = report.markdown(results)
        self.assertLess(text.index("| none | 1+1 |"), text.index("| primary | 1+1 |"))
        self.assertIn("| make run | 1+1 |", text)

    def test_scaling_figures(self):
        samples = [
            {"replicas": {"db2": {"sync": "sync", "lag_s": 0.002, "behind_bytes": 100},
                          "db3": {"sync": "async", "lag_s": None, "behind_bytes": 0}},
             "connections": {"10.77.1.21": 6, "10.77.1.41": 3}},
            {"replicas": {"db2": {"sync": "sync", "lag_s": 0.004, "behind_bytes": 300},
                          "db3": {"sync": "async", "lag_s": 0.010, "behind_bytes": 5000}},
             "connections": {"10.77.1.21": 8}},
        ]
        observed = observe.summarise(samples, {"10.77.1.21": "buyer1", "10.77.1.41": "payments1"})
        self.assertEqual(observed["connections"], {"buyer1": 8, "payments1": 3})
        sync = observed["replicas"]["sync"]
        self.assertAlmostEqual(sync["mean_lag_ms"], 3.0)
        self.assertEqual((sync["max_lag_ms"], sync["max_behind_bytes"]), (4.0, 300))
        # A replica with nothing to replay is not behind.
        self.assertAlmostEqual(observed["replicas"]["async"]["mean_lag_ms"], 5.0)
        none = {**_result("none", 10, 900.0), "observed": observed}
        text = report.scaling_markdown([none, _result(report.SINGLE, 10, 1500.0)])
        self.assertIn("| 10+10 | 900 | 1,500 | 0.60 |", text)
        self.assertIn("| none | 10+10 | sync | 3.0 ms | 4.0 ms | 300 |", text)
        self.assertIn("| none | 10+10 | buyer1 8, payments1 3 |", text)
        # The browsing buyers' run says so: its rows are not the others' twins.
        reads = {**_result("reads", 10, 0.0), "observed": observed}
        text = report.scaling_markdown([none, reads])
        self.assertIn("| reads | 10 browsing | sync | 3.0 ms | 4.0 ms | 300 |", text)
        self.assertIn("| reads | 10 browsing | buyer1 8, payments1 3 |", text)


@implementer(IStreamClientEndpoint)
class _Frontend:
    """An endpoint that counts its connections (or refuses them)."""

    def __init__(self, name: str, up: bool = True) -> None:
        self.name, self.up, self.connections = name, up, 0

    def connect(self, factory):
        if not self.up:
            return defer.fail(ConnectionRefusedError())
        self.connections += 1
        return defer.succeed(self.name)


class SpreadTests(unittest.SynchronousTestCase):
    def test_connections_take_turns(self):
        one, two = _Frontend("one"), _Frontend("two")
        spread = benchmark.Spread([one, two], reactor)
        got = [self.successResultOf(spread.connect(None)) for _ in range(4)]
        self.assertEqual(got, ["one", "two", "one", "two"])

    def test_a_frontend_that_is_down_is_passed_over(self):
        one, two = _Frontend("one", up=False), _Frontend("two")
        spread = benchmark.Spread([one, two], reactor)
        got = [self.successResultOf(spread.connect(None)) for _ in range(3)]
        self.assertEqual(got, ["two", "two", "two"])
