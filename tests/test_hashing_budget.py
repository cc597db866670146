"""The hashing budget: argon2id work admitted a few at a time, waiting turns
served one source address after the other, RATE_LIMITED only beyond an
address's (large) share; account creation limited per source address.

The budget's rules are tested with work that is a Deferred the test fires;
the flood test runs the real services on loopback with the real argon2id
cost, one client flooding CreateAccount from 127.0.0.1 while another logs
in from 127.0.0.2.
"""

import time

from twisted.internet import defer, reactor
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.trial import unittest

from marketplace.contract.errors import RATE_LIMITED, ApiError
from marketplace.customer.accounts import AccountLimits
from marketplace.customer.passwords import HashingBudget
from marketplace.daemon.build import build
from tests.support import (
    WireClient,
    _later,
    assert_error,
    empty_databases,
    payload_of,
    test_settings,
)


class BudgetTests(unittest.SynchronousTestCase):
    """The rules of admission, with work the test finishes by hand."""

    def setUp(self):
        self.budget = HashingBudget(workers=2, queue=4, per_source=3, per_username=2)
        self.started = []

    def submit(self, source, username=None):
        """Ask for one piece of work; the Deferred of its outcome."""

        def work():
            d = defer.Deferred()
            self.started.append((source, d))
            return d

        return defer.Deferred.fromCoroutine(self.budget.run(source, username, work))

    def finish(self, index=0):
        source, d = self.started.pop(index)
        d.callback(source)

    def refused(self, d):
        self.assertEqual(self.failureResultOf(d, ApiError).value.code, RATE_LIMITED)

    def test_at_most_workers_run_at_once(self):
        results = [self.submit(f"10.0.0.{n}") for n in range(4)]
        self.assertEqual(len(self.started), 2)
        self.finish()
        self.assertEqual(self.successResultOf(results[0]), "10.0.0.0")
        self.assertEqual(len(self.started), 2)

    def test_a_source_beyond_its_share_is_refused(self):
        for _ in range(3):
            self.submit("10.0.0.1")
        self.refused(self.submit("10.0.0.1"))
        # Others are not.
        self.assertNoResult(self.submit("10.0.0.2"))

    def test_a_full_queue_refuses(self):
        for n in range(6):
            self.submit(f"10.0.0.{n}")
        self.refused(self.submit("10.0.0.99"))

    def test_a_username_beyond_its_share_waits(self):
        """At most per_username of one username's run at once; the next one
        waits, and work of other usernames goes past it."""
        budget = HashingBudget(workers=3, queue=4, per_source=3, per_username=2)
        self.budget = budget
        self.submit("10.0.0.1", "admin")
        self.submit("10.0.0.2", "admin")
        third = self.submit("10.0.0.3", "admin")
        self.submit("10.0.0.3", "bea")
        self.assertEqual(len(self.started), 3)
        self.assertEqual(budget.waiting, 1)
        self.finish(0)
        self.assertEqual([s for s, _ in self.started], ["10.0.0.2", "10.0.0.3", "10.0.0.3"])
        self.finish(2)
        self.assertEqual(self.successResultOf(third), "10.0.0.3")

    def test_a_crowd_behind_one_address_waits_its_turn(self):
        """Fifty at once from one address all run, two at a time; none is
        refused."""
        budget = HashingBudget(workers=2, queue=64, per_source=64, per_username=2)
        self.budget = budget
        results = [self.submit("10.0.0.1", f"user{n}") for n in range(50)]
        while self.started:
            self.assertLessEqual(len(self.started), 2)
            self.finish()
        self.assertEqual([self.successResultOf(r) for r in results], ["10.0.0.1"] * 50)
        self.assertEqual((budget.running, budget.waiting), (0, 0))

    def test_a_waiting_turn_cancelled_leaves_the_queue(self):
        self.submit("10.0.0.1")
        self.submit("10.0.0.1")
        waiting = self.submit("10.0.0.2")
        waiting.cancel()
        self.failureResultOf(waiting)
        self.assertEqual(self.budget.waiting, 0)
        self.finish()
        self.assertEqual(len(self.started), 1)

    def test_sources_take_turns(self):
        """A source with work waiting does not keep another one waiting
        behind all of it."""
        for _ in range(3):
            self.submit("flood")
        self.submit("honest")
        # Two of the flood's run; the third and the honest one wait.
        self.assertEqual([s for s, _ in self.started], ["flood", "flood"])
        self.finish()
        self.assertEqual([s for s, _ in self.started], ["flood", "flood"])
        # The flood's third got the turn; the honest one comes next, before
        # any more of the flood.
        self.submit("flood")
        self.finish()
        self.assertEqual([s for s, _ in self.started], ["flood", "honest"])

    def test_a_refused_admission_frees_its_place(self):
        async def refuse():
            raise ApiError(RATE_LIMITED, "no")

        d = defer.Deferred.fromCoroutine(
            self.budget.run("10.0.0.1", None, lambda: defer.succeed(1), refuse)
        )
        self.refused(d)
        self.assertEqual(self.budget.running, 0)
        for _ in range(3):
            self.submit("10.0.0.1")
        self.assertEqual(len(self.started), 2)


async def _from(port: int, source: str) -> WireClient:
    """A wire client of a loopback port, connecting from C{source}."""
    return await connectProtocol(
        TCP4ClientEndpoint(reactor, "127.0.0.1", port, bindAddress=(source, 0)),
        WireClient(),
    )


class FloodTests(unittest.TestCase):
    """1,000 CreateAccount requests from one address while someone else logs
    in: the flood is mostly refused, the login succeeds."""

    timeout = 600
    PASSWORD = "a long passphrase"

    async def setUp(self):
        await empty_databases(self)
        # Loopback is trusted by default (make run's own machine); here both
        # addresses stand for strangers.
        self.limits = AccountLimits(trusted_networks="none")
        self.top = build(
            {"buyer": "tcp:0:interface=127.0.0.1"},
            test_settings(),
            reactor,
            account_limits=self.limits,
        )
        self.top.startService()
        self.addCleanup(self.top.stopService)
        server = next(s for s in self.top if hasattr(s, "endpoint"))
        await server.backend.ready()
        while server.port is None:
            await _later(0.01)
        self.port = server.port.getHost().port
        self.clients = []

    def tearDown(self):
        for client in self.clients:
            if client.transport.connected:
                client.transport.loseConnection()
        return defer.gatherResults([c.closed for c in self.clients])

    async def test_login_succeeds_during_a_sign_up_flood(self):
        honest = await _from(self.port, "127.0.0.2")
        self.clients.append(honest)
        payload_of(
            self,
            await honest.request(
                "CreateAccount", {"username": "alice", "password": self.PASSWORD}
            ),
        )
        flooders = []
        for _ in range(10):
            flooders.append(await _from(self.port, "127.0.0.1"))
        self.clients.extend(flooders)
        flood = [
            flooder.request(
                "CreateAccount", {"username": f"f{c}x{n}", "password": self.PASSWORD}
            )
            for c, flooder in enumerate(flooders)
            for n in range(100)
        ]
        # Let the flood get going, then log in.
        await _later(1.0)
        started = time.monotonic()
        login = await honest.request(
            "Login", {"username": "alice", "password": self.PASSWORD}
        )
        took = time.monotonic() - started
        payload_of(self, login)
        answers = await defer.gatherResults(flood)
        codes = [
            a["error"]["code"] if a["type"] == "error" else "CREATED" for a in answers
        ]
        print(
            f"\nlogin during the flood took {took:.3f} s;"
            f" flood: {codes.count('CREATED')} created,"
            f" {codes.count('RATE_LIMITED')} RATE_LIMITED"
        )
        self.assertEqual(set(codes), {"CREATED", "RATE_LIMITED"})
        # No more accounts than one address's bucket holds (and the one
        # token it may have gained back meanwhile).
        self.assertLessEqual(codes.count("CREATED"), self.limits.signups_per_address + 1)
        self.assertGreater(codes.count("RATE_LIMITED"), 900)
        # The address stays limited; the other one is not.
        assert_error(
            self,
            await flooders[0].request(
                "CreateAccount", {"username": "late", "password": self.PASSWORD}
            ),
            "RATE_LIMITED",
        )
        payload_of(
            self,
            await honest.request("CreateAccount", {"username": "bob", "password": self.PASSWORD}),
        )


class SourceTests(unittest.SynchronousTestCase):
    """What the shares are counted by."""

    def test_addresses(self):
        from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress

        from marketplace.frame.protocol import source_of

        self.assertEqual(source_of(IPv4Address("TCP", "203.0.113.9", 4000)), "203.0.113.9")
        # One IPv6 host usually has a whole /64.
        self.assertEqual(
            source_of(IPv6Address("TCP", "2001:db8:1:2:aaaa::1", 4000)),
            source_of(IPv6Address("TCP", "2001:db8:1:2:bbbb::9", 4000)),
        )
        self.assertNotEqual(
            source_of(IPv6Address("TCP", "2001:db8:1:2::1", 4000)),
            source_of(IPv6Address("TCP", "2001:db8:1:3::1", 4000)),
        )
        self.assertEqual(source_of(IPv6Address("TCP", "::ffff:203.0.113.9", 4000)), "203.0.113.9")
        self.assertEqual(source_of(UNIXAddress(None)), "local")
