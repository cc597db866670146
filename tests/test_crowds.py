"""Limits that tell a crowd from an attack, on the real services and
databases: the course's evaluation (100 sellers and 100 buyers from one
machine) and fifty logins at once from one address all get through;
guesses from one address neither lock the owner out elsewhere nor let it
enumerate names; a wrong password costs the same work for any username.

Hashing is argon2id with the cheapest parameters (as tests/test_security.py
does), so these tests measure the limits, not argon2.
"""

import time

from argon2 import PasswordHasher
from twisted.internet import defer, reactor
from twisted.trial import unittest

from marketplace.bench.runner import Plan, drive
from marketplace.customer.accounts import AccountLimits
from marketplace.customer.passwords import Passwords
from marketplace.daemon.build import build
from tests.support import (
    _later,
    assert_error,
    close_after_test,
    empty_databases,
    payload_of,
    test_settings,
)
from tests.test_hashing_budget import _from

PASSWORD = "a long passphrase"


class CountingPasswords(Passwords):
    """Cheap argon2id that counts every verification it computes."""

    def __init__(self, budget):
        super().__init__(PasswordHasher(time_cost=1, memory_cost=8, parallelism=1), budget)
        self.checks = 0

    def _check(self, stored, password):
        self.checks += 1
        return super()._check(stored, password)


class CrowdTestCase(unittest.TestCase):
    """The seller and buyer services with C{account_limits} (the defaults
    unless a test case says otherwise), cheap hashing, on loopback."""

    timeout = 120
    account_limits = AccountLimits()

    async def setUp(self):
        await empty_databases(self)
        self.passwords = CountingPasswords(self.account_limits.budget())
        top = build(
            {"seller": "tcp:0:interface=127.0.0.1", "buyer": "tcp:0:interface=127.0.0.1"},
            test_settings(),
            reactor,
            account_limits=self.account_limits,
            passwords=self.passwords,
        )
        top.startService()
        self.addCleanup(top.stopService)
        servers = [s for s in top if hasattr(s, "endpoint")]
        await servers[0].backend.ready()
        self.ports = {}
        for server in servers:
            while server.port is None:
                await _later(0.01)
            self.ports[server.name] = server.port.getHost().port

    async def client(self, source: str, service: str = "buyer"):
        """A wire client of C{service} connecting from C{source}."""
        client = await _from(self.ports[service], source)
        close_after_test(self, client)
        return client


class EvaluationTests(CrowdTestCase):
    """The course's evaluation on the defaults: everyone on one machine."""

    async def test_hundred_sellers_and_hundred_buyers_from_one_address(self):
        plan = Plan(
            seller=f"tcp:host=127.0.0.1:port={self.ports['seller']}",
            buyer=f"tcp:host=127.0.0.1:port={self.ports['buyer']}",
            scenarios=(100,),
            calls=3,
            runs=1,
            items=1,
            retry_deadline=10.0,
        ).with_tag()
        started = time.monotonic()
        results = await drive(plan, reactor)
        took = time.monotonic() - started
        [run] = results[100]
        print(f"\n100+100 from one address: sign-ups, logins and 600 calls in {took:.2f} s")
        self.assertEqual(dict(run.recorder.errors), {})
        self.assertEqual(run.recorder.calls, 600)


class FiftyLoginsTests(CrowdTestCase):
    async def test_fifty_simultaneous_logins_from_one_address_all_succeed(self):
        client = await self.client("127.0.0.1")
        payload_of(
            self, await client.request("CreateAccount", {"username": "bea", "password": PASSWORD})
        )
        started = time.monotonic()
        answers = await defer.gatherResults(
            [client.request("Login", {"username": "bea", "password": PASSWORD}) for _ in range(50)]
        )
        took = time.monotonic() - started
        print(f"\nfifty logins at once from one address: {took:.2f} s")
        for answer in answers:
            payload_of(self, answer)


class AttackTests(CrowdTestCase):
    """From an address outside the trusted networks (127.0.0.2)."""

    account_limits = AccountLimits(trusted_networks="127.0.0.1/32")

    async def test_failures_from_another_address_do_not_lock_the_owner_out(self):
        owner = await self.client("127.0.0.1")
        attacker = await self.client("127.0.0.2")
        payload_of(
            self, await owner.request("CreateAccount", {"username": "owner", "password": PASSWORD})
        )
        codes = []
        for n in range(12):
            answer = await attacker.request(
                "Login", {"username": "OWNER", "password": f"guess {n}"}
            )
            codes.append(answer["error"]["code"])
        self.assertEqual(codes, ["INVALID_CREDENTIALS"] * 5 + ["RATE_LIMITED"] * 7)
        payload_of(self, await owner.request("Login", {"username": "owner", "password": PASSWORD}))
        # The attacker's address stays refused, even with the password.
        assert_error(
            self,
            await attacker.request("Login", {"username": "owner", "password": PASSWORD}),
            "RATE_LIMITED",
        )

    async def test_check_username_is_limited_per_address(self):
        attacker = await self.client("127.0.0.2")
        started = time.monotonic()
        answers = await defer.gatherResults(
            [attacker.request("CheckUsername", {"username": f"name{n}"}) for n in range(2000)]
        )
        took = time.monotonic() - started
        told = [a for a in answers if a["type"] == "response"]
        refused = [a for a in answers if a["type"] == "error"]
        print(
            f"\n2,000 CheckUsername from one address in {took:.2f} s:"
            f" {len(told)} answered, {len(refused)} RATE_LIMITED"
        )
        self.assertEqual({a["error"]["code"] for a in refused}, {"RATE_LIMITED"})
        limit = self.account_limits.username_checks_per_address
        # The bucket's size, and what it gains back while the test runs.
        self.assertGreaterEqual(len(told), limit)
        regained = took * limit / self.account_limits.signup_window
        self.assertLessEqual(len(told), limit + 1 + regained)
        # A trusted address is not held up.
        trusted = await self.client("127.0.0.1")
        payload_of(self, await trusted.request("CheckUsername", {"username": "free"}))

    async def test_sign_ups_beyond_the_bucket_are_refused_and_trusted_ones_are_not(self):
        crowd = await self.client("127.0.0.2")
        limit = self.account_limits.signups_per_address
        answers = await defer.gatherResults(
            [
                crowd.request("CreateAccount", {"username": f"u{n}", "password": PASSWORD})
                for n in range(limit + 5)
            ]
        )
        codes = [a["error"]["code"] if a["type"] == "error" else "OK" for a in answers]
        self.assertEqual(codes.count("OK"), limit, codes)
        self.assertEqual(codes.count("RATE_LIMITED"), 5, codes)
        trusted = await self.client("127.0.0.1")
        answers = await defer.gatherResults(
            [
                trusted.request("CreateAccount", {"username": f"t{n}", "password": PASSWORD})
                for n in range(limit + 5)
            ]
        )
        for answer in answers:
            payload_of(self, answer)


class EqualWorkTests(CrowdTestCase):
    """A wrong password costs as many argon2id verifications whether the
    username exists or not, whatever the password's form."""

    async def checks_of(self, client, username: str, password: str) -> int:
        before = self.passwords.checks
        assert_error(
            self,
            await client.request("Login", {"username": username, "password": password}),
            "INVALID_CREDENTIALS",
        )
        return self.passwords.checks - before

    async def test_full_width_wrong_password(self):
        client = await self.client("127.0.0.1")
        payload_of(
            self, await client.request("CreateAccount", {"username": "bea", "password": PASSWORD})
        )
        # NFKC turns the full-width letter into an ordinary one, so the
        # password has two forms to check.
        for password in ("ｗrong-password-1", "wrong-password-1"):
            existing = await self.checks_of(client, "bea", password)
            unknown = await self.checks_of(client, "nobody", password)
            self.assertEqual(existing, unknown, password)
        self.assertEqual(await self.checks_of(client, "nobody", "ｗrong-password-1"), 2)


class OneAtATimeTests(unittest.SynchronousTestCase):
    """The lock per key that serialises logins per username and address."""

    def test_one_at_a_time_per_key_and_forgotten_after(self):
        from marketplace.customer.throttles import OneAtATime

        turns = OneAtATime()
        running = []

        async def work(d):
            running.append(d)
            await d
            running.remove(d)

        first, second, other = defer.Deferred(), defer.Deferred(), defer.Deferred()
        done = [defer.Deferred.fromCoroutine(turns.run(key, lambda d=d: work(d)))
                for key, d in (("a", first), ("a", second), ("b", other))]
        self.assertEqual(running, [first, other])
        first.callback(None)
        self.assertEqual(running, [other, second])
        second.callback(None)
        other.callback(None)
        for d in done:
            self.successResultOf(d)
        self.assertEqual(len(turns), 0)

    def test_a_long_line_finishing_at_once_does_not_recurse(self):
        from marketplace.customer.throttles import OneAtATime

        turns = OneAtATime()
        gate = defer.Deferred()

        async def refused():
            raise ValueError("refused from memory")

        first = defer.Deferred.fromCoroutine(turns.run("k", lambda: gate))
        line = [defer.Deferred.fromCoroutine(turns.run("k", refused)) for _ in range(5000)]
        gate.callback(None)
        self.successResultOf(first)
        for d in line:
            self.failureResultOf(d, ValueError)
        self.assertEqual(len(turns), 0)


class BenchThrottledTests(CrowdTestCase):
    """marketplace-bench against a deployment whose sign-up limit it cannot
    outwait: it stops with one line naming the option, keeping what it
    measured."""

    account_limits = AccountLimits(trusted_networks="none", signups_per_address=4)

    async def test_a_limit_it_cannot_outwait(self):
        from marketplace.bench.patience import Throttled

        plan = Plan(
            seller=f"tcp:host=127.0.0.1:port={self.ports['seller']}",
            buyer=f"tcp:host=127.0.0.1:port={self.ports['buyer']}",
            scenarios=(1, 10),
            calls=2,
            runs=1,
            items=1,
            retry_deadline=0.5,
        ).with_tag()
        with self.assertRaises(Throttled) as raised:
            await drive(plan, reactor)
        throttled = raised.exception
        self.assertEqual(list(throttled.results), [1])
        self.assertEqual(throttled.unmeasured, (10,))
        line = throttled.line()
        self.assertNotIn("\n", line)
        self.assertIn("--signups-per-address", line)
        self.assertIn("scenarios not measured: 10", line)
