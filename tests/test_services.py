"""The service tree of a daemon (marketplace.daemon.service, periodic.py,
tap.build): what it is made of, the order its services start and stop in,
and the periodic-job mechanism every periodic job uses."""

from dataclasses import replace

from twisted.internet import defer, reactor, task
from twisted.logger import LogLevel, capturedLogs, formatEvent
from twisted.trial import unittest

from marketplace.postgres.database import Database, DatabaseDown
from marketplace.postgres.embedded import EmbeddedServer
from marketplace.postgres.schema import Schema
from marketplace.daemon import exits
from marketplace.frame.periodic import PeriodicJob
from marketplace.daemon.service import ApiServer, Backend
from marketplace.daemon.build import build
from tests.support import empty_databases, test_settings

# Nothing listens on port 1: a database there cannot be reached.
UNREACHABLE = "host=127.0.0.1 port=1 dbname=nothing connect_timeout=1"


class PeriodicJobTests(unittest.SynchronousTestCase):
    """PeriodicJob on a fake clock."""

    def setUp(self):
        self.clock = task.Clock()
        self.runs = []
        self.gate = defer.Deferred()

    def job(self, outcome=None):
        async def run():
            self.runs.append(self.clock.seconds())
            if isinstance(outcome, Exception):
                raise outcome
            if isinstance(outcome, defer.Deferred):
                await outcome

        return run

    def test_first_run_once_ready_then_every_interval(self):
        periodic = PeriodicJob("job", 10, self.job(), self.clock, after=lambda: self.gate)
        periodic.startService()
        self.clock.advance(25)
        self.assertEqual(self.runs, [])  # not ready yet
        self.gate.callback(None)
        self.clock.pump([10, 10])
        self.assertEqual(self.runs, [25, 35, 45])
        periodic.stopService()
        self.clock.advance(100)
        self.assertEqual(self.runs, [25, 35, 45])

    def test_not_now(self):
        periodic = PeriodicJob("job", 1, self.job(), self.clock, now=False)
        periodic.startService()
        self.assertEqual(self.runs, [])
        self.clock.advance(1)
        self.assertEqual(self.runs, [1])
        periodic.stopService()

    def test_never_runs_when_not_ready(self):
        periodic = PeriodicJob("job", 1, self.job(), self.clock, after=lambda: self.gate)
        periodic.startService()
        self.gate.errback(RuntimeError("no database"))
        self.clock.advance(10)
        self.assertEqual(self.runs, [])
        self.assertIsNone(periodic.stopService())

    def test_failed_run_is_logged_and_runs_again(self):
        periodic = PeriodicJob("job", 1, self.job(ValueError("oops")), self.clock)
        with capturedLogs() as events:
            periodic.startService()
            self.clock.advance(1)
        self.assertEqual(self.runs, [0, 1])
        self.assertEqual(len(self.flushLoggedErrors(ValueError)), 2)
        self.assertEqual([e["log_level"] for e in events], [LogLevel.critical] * 2)
        periodic.stopService()

    def test_unreachable_database_is_one_line(self):
        periodic = PeriodicJob("job", 1, self.job(DatabaseDown("down")), self.clock)
        with capturedLogs() as events:
            periodic.startService()
        self.assertEqual([e["log_level"] for e in events], [LogLevel.info])
        self.assertIn("job skipped", formatEvent(events[0]))
        periodic.stopService()

    def test_stop_waits_for_the_run_under_way(self):
        running = defer.Deferred()
        periodic = PeriodicJob("job", 1, self.job(running), self.clock)
        periodic.startService()
        stopped = periodic.stopService()
        self.assertNoResult(stopped)
        running.callback(None)
        self.successResultOf(stopped)


class TreeTests(unittest.SynchronousTestCase):
    """What tap.build puts together, in which order (nothing started)."""

    def test_buyer_and_seller(self):
        top = build(
            {"seller": "tcp:0:interface=127.0.0.1", "buyer": "tcp:0:interface=127.0.0.1"},
            test_settings(),
            reactor,
        )
        kinds = [type(child).__name__ for child in top]
        self.assertEqual(
            kinds,
            ["Backend", "PeriodicJob", "PaymentsClient", "ApiServer", "ApiServer", "PeriodicJob"],
        )
        names = [child.name for child in top]
        self.assertEqual(names[1], "session sweep")
        self.assertEqual(names[-1], "purchase sweep")
        backend = list(top)[0]
        self.assertEqual(
            [type(child) for child in backend], [Database, Database, Schema]
        )

    def test_embedded_server_first(self):
        settings = replace(test_settings(), customer_db=None, product_db=None)
        top = build({"seller": "tcp:0:interface=127.0.0.1"}, settings, reactor)
        backend = list(top)[0]
        self.assertEqual(
            [type(child) for child in backend], [EmbeddedServer, Database, Database, Schema]
        )
        self.assertEqual(backend.embedded.databases, [backend.customer, backend.product])

    def test_payments_alone(self):
        top = build({"payments": "tcp:0:interface=127.0.0.1"}, test_settings(), reactor)
        self.assertEqual([type(child).__name__ for child in top], ["Backend", "ApiServer"])
        self.assertEqual([db.name for db in list(top)[0].databases], ["payments"])


class StartStopTests(unittest.TestCase):
    """A daemon's services on the test databases."""

    timeout = 60

    async def test_pools_close_after_listeners_and_sweeps_stop(self):
        await empty_databases(self)
        top = build(
            {"seller": "tcp:0:interface=127.0.0.1", "buyer": "tcp:0:interface=127.0.0.1"},
            test_settings(),
            reactor,
        )
        children = list(top)
        backend = children[0]
        servers = [c for c in children if isinstance(c, ApiServer)]
        jobs = [c for c in children if isinstance(c, PeriodicJob)]
        top.startService()
        self.addCleanup(lambda: top.stopService() if top.running else None)
        await backend.ready()
        for server in servers:
            await server.listening()
        self.assertTrue(all(db.open_connections for db in backend.databases))
        self.assertTrue(all(job.running for job in jobs))

        seen = []
        for database in backend.databases:
            stop = database.stopService

            def stopping(stop=stop, database=database):
                seen.append(
                    (
                        database.name,
                        [s.port for s in servers],
                        [j.running for j in jobs],
                        [d.open_connections > 0 for d in backend.databases],
                    )
                )
                return stop()

            database.stopService = stopping
        await top.stopService()
        # The last database closed first; every listener and job was gone
        # by then, and every pool was still open.
        self.assertEqual(
            seen[0], ("product", [None, None], [False, False], [True, True])
        )
        self.assertEqual([name for name, *_ in seen], ["product", "customer"])
        self.assertEqual([db.open_connections for db in backend.databases], [0, 0])
        self.assertFalse(any(child.running for child in backend))

    async def test_stopped_while_waiting_for_the_database_is_no_fault(self):
        failed = []
        self.patch(exits, "fail", lambda reactor, message, **fields: failed.append(message))
        settings = replace(test_settings(), customer_db=UNREACHABLE, product_db=UNREACHABLE)
        backend = Backend(settings, reactor)
        ready = backend.ready()
        backend.startService()
        await task.deferLater(reactor, 1.0, lambda: None)  # the schema waits for the database
        self.assertNoResult(ready)
        await backend.stopService()
        with self.assertRaises(Exception):
            await ready
        await task.deferLater(reactor, 1.0, lambda: None)  # a wait under way would be over
        self.assertEqual(failed, [])
        self.assertFalse(any(child.running for child in backend))
        self.assertEqual([db.open_connections for db in backend.databases], [0, 0])

    async def test_databases_that_cannot_be_set_up_stop_the_daemon(self):
        failed = []
        self.patch(exits, "fail", lambda reactor, message, **fields: failed.append(message))
        # No folder can be made there for the embedded server.
        settings = replace(
            test_settings(), customer_db=None, product_db=None, data_dir="/proc/marketplace"
        )
        backend = Backend(settings, reactor)
        backend.startService()
        with self.assertRaises(OSError):
            await backend.ready()
        self.assertEqual(len(failed), 1)
        self.assertIn("could not be set up", failed[0])
        self.assertEqual(len(self.flushLoggedErrors(OSError)), 1)
        await backend.stopService()
        self.assertFalse(any(child.running for child in backend))
