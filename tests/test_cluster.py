"""The replicated deployment: the primary database host dies under load,
and nothing acknowledged is lost, nothing is done twice.

A real cluster (marketplace.cluster: three PostgreSQL nodes under Patroni
and etcd, two frontends per service, each host a network namespace) is
brought up; buyers fill carts and buy, sellers reprice, and part-way the
primary's host is killed (SIGKILL to every process on it).  Needs root for
the namespaces (CI runs as root).
"""

import os
import tempfile
from pathlib import Path

from twisted.internet import defer, reactor, threads
from twisted.trial import unittest

from marketplace.cluster import evaluate, hosts, launch
from marketplace.cluster import report as evaluation


class PrimaryFailureTests(unittest.TestCase):
    timeout = 600

    def setUp(self):
        if os.geteuid() != 0:
            raise unittest.SkipTest("a cluster needs root (network namespaces)")
        self.folder = Path(tempfile.mkdtemp(prefix="marketplace-cluster-"))

        def take_down():
            return threads.deferToThread(launch.down, self.folder)

        d = threads.deferToThread(launch.up, self.folder)

        def up(plan):
            self.plan = plan
            self.addCleanup(take_down)

        return d.addCallback(up)

    @defer.inlineCallbacks
    def test_primary_killed_under_load(self):
        plan = self.plan
        old_primary = launch.primary(plan)
        population = evaluate.Population(
            reactor,
            [plan.endpoint(h) for h in plan.by_role("seller")],
            [plan.endpoint(h) for h in plan.by_role("buyer")],
        )
        load = evaluate.Load(reactor, population, clients=3)
        yield defer.Deferred.fromCoroutine(load.set_up())
        failed_at = yield defer.Deferred.fromCoroutine(
            load.run(40.0, 5.0, lambda: hosts.kill(plan, old_primary))
        )
        new_primary = yield threads.deferToThread(launch.primary, plan)
        self.assertIsNotNone(new_primary)
        self.assertNotEqual(new_primary, old_primary)
        # Service came back: calls begun after the failure succeeded.
        back = [c.ended - failed_at for c in load.calls
                if c.started > failed_at and c.code == "OK" and c.api == "AddItemToCart"]
        self.assertTrue(back, "no cart addition succeeded after the primary was killed")
        print(f"\nprimary {old_primary.name} killed; first cart addition after "
              f"{min(back):.1f} s; new primary {new_primary.name}")
        # Once the sweepers have settled what the failure left pending (or
        # their time is up).
        report = yield defer.Deferred.fromCoroutine(evaluation.settled_invariants(
            reactor, load, plan.database_dsn("marketplace"), plan.database_dsn("payments"),
            evaluate_settle_wait(),
        ))
        yield defer.Deferred.fromCoroutine(load.close())
        print(report)
        self.assertTrue(load.ledger.purchases, "no purchase was acknowledged")
        self.assertEqual(report, {key: 0 for key in report})


def evaluate_settle_wait() -> float:
    """Seconds to wait for the buyer daemons' sweep to settle purchases."""
    from marketplace.cluster.topology import SETTLE_AFTER

    return evaluation.settle_wait(SETTLE_AFTER)
