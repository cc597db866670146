"""WorkerMonitor's rules, on a fake reactor: workers start once worker 0
listens, one that dies is started again (at once after a long life, with
growing delays after quick deaths), five quick deaths in a row stop the
daemon, and stopping waits for the workers to be gone.

(The same on real processes: tests/test_crash_workers.py.)
"""

import json
import signal

from twisted.internet import defer, error
from twisted.internet.testing import MemoryReactorClock
from twisted.logger import LogLevel, capturedLogs
from twisted.python.failure import Failure
from twisted.trial import unittest

from marketplace.daemon import exits, workers
from marketplace.daemon.workers import MAX_QUICK_DEATHS, WorkerMonitor


class _Process:
    def __init__(self, proto, pid: int) -> None:
        self.proto = proto
        self.pid = pid
        self.signals = []

    def signalProcess(self, name):  # noqa: N802 (Twisted name)
        self.signals.append(name)

    def end(self, signal_number=None) -> None:
        """The process ends: of a signal, or with status 0."""
        self.pid = None
        if signal_number is None:
            self.proto.processEnded(Failure(error.ProcessDone(0)))
        else:
            self.proto.processEnded(
                Failure(error.ProcessTerminated(None, signal_number, None))
            )


class _Reactor(MemoryReactorClock):
    def __init__(self) -> None:
        super().__init__()
        self.processes = []

    def spawnProcess(self, proto, executable, args, env=None, path=None,  # noqa: N802
                     uid=None, gid=None, usePTY=0, childFDs=None):
        process = _Process(proto, 1000 + len(self.processes))
        process.args, process.env = args, env
        self.processes.append(process)
        proto.makeConnection(process)
        return process


class _Database:
    def __init__(self, dsn):
        self.dsn = dsn


class _Backend:
    customer = _Database("dbname=marketplace password=secret")
    product = _Database("dbname=marketplace password=secret")
    payments = _Database("dbname=payments")

    def __init__(self):
        self.up = defer.Deferred()

    def ready(self):
        return self.up


class _Server:
    def __init__(self):
        self.up = defer.Deferred()

    def listening(self):
        return self.up


class WorkerMonitorTests(unittest.SynchronousTestCase):
    def setUp(self):
        self.reactor = _Reactor()
        self.backend = _Backend()
        self.server = _Server()
        self.failed = []
        self.patch(exits, "fail", lambda reactor, message, **fields: self.failed.append(fields))
        self.monitor = WorkerMonitor(
            3, "marketplace.tap.everything", ["--workers=3"], self.backend, [self.server],
            self.reactor,
        )
        self.monitor.startService()

    def up(self):
        self.backend.up.callback(None)
        self.server.up.callback(None)

    def worker_1(self) -> _Process:
        """The running process of worker 1."""
        [process] = [p for p in self.reactor.processes
                     if p.pid is not None and "worker_main(1)" in p.args[-1]]
        return process

    def test_workers_start_once_worker_0_listens(self):
        self.backend.up.callback(None)
        self.assertEqual(self.reactor.processes, [])
        self.server.up.callback(None)
        self.assertEqual(len(self.reactor.processes), 2)
        first = self.reactor.processes[0]
        self.assertEqual(first.args[1], "-c")
        self.assertIn("SIG_IGN", first.args[2])  # Ctrl-C is worker 0's to act on
        self.assertIn("worker_main(1)", first.args[2])
        # The connection strings go through the environment, not argv.
        setup = json.loads(first.env[workers.SETUP_VARIABLE])
        self.assertEqual(setup["dsns"]["customer_db"], "dbname=marketplace password=secret")
        self.assertNotIn("secret", " ".join(first.args))

    def test_a_workers_lines_are_relayed_but_blank_ones(self):
        with capturedLogs() as events:
            for line in ("Main loop terminated.", "", "  "):
                self.monitor.log.info("[{tag}] {line}", tag="worker 1", line=line,
                                      stream="stdout")
        self.assertEqual([e["line"] for e in events], ["Main loop terminated."])

    def test_no_workers_when_worker_0_cannot_listen(self):
        self.backend.up.callback(None)
        self.server.up.errback(error.CannotListenError("", 1, OSError("in use")))
        self.assertEqual(self.reactor.processes, [])

    def test_long_lived_worker_restarted_at_once(self):
        self.up()
        self.reactor.advance(60)
        with capturedLogs() as events:
            self.reactor.processes[0].end(signal.SIGKILL)
        self.reactor.advance(0)
        self.assertEqual(len(self.reactor.processes), 3)
        warnings = [e for e in events if e["log_level"] == LogLevel.warn]
        self.assertEqual(len(warnings), 1)
        self.assertEqual(warnings[0]["how"], "was killed by SIGKILL")
        self.assertEqual(self.failed, [])

    def test_quick_deaths_back_off_then_stop_the_daemon(self):
        self.up()
        delays = []
        for n in range(MAX_QUICK_DEATHS):
            spawned = len(self.reactor.processes)
            # worker 2 lives on; only worker 1 keeps dying
            self.worker_1().end(signal.SIGSEGV)
            if n == MAX_QUICK_DEATHS - 1:
                break
            waited = 0.0
            while len(self.reactor.processes) == spawned:
                self.reactor.advance(0.25)
                waited += 0.25
            delays.append(waited)
        self.assertEqual(delays, [1.0, 2.0, 4.0, 8.0])
        self.assertEqual(len(self.failed), 1)
        self.assertEqual(self.failed[0]["n"], MAX_QUICK_DEATHS)
        self.assertEqual(self.failed[0]["how"], "was killed by SIGSEGV")

    def test_a_long_life_resets_the_count(self):
        self.up()
        for _ in range(MAX_QUICK_DEATHS - 1):
            self.worker_1().end(9)
            self.reactor.advance(10)
        self.reactor.advance(60)
        self.worker_1().end(9)
        self.assertEqual(self.failed, [])

    def test_stop_waits_for_the_workers(self):
        self.up()
        stopped = self.monitor.stopService()
        for process in self.reactor.processes:
            self.assertEqual(process.signals, ["TERM"])
        self.assertNoResult(stopped)
        self.reactor.processes[0].end()
        self.assertNoResult(stopped)
        self.reactor.processes[1].end(signal.SIGTERM)
        self.successResultOf(stopped)
        self.reactor.advance(100)
        self.assertEqual(len(self.reactor.processes), 2, "nothing started again")

    def test_stop_kills_a_worker_that_does_not_stop(self):
        self.up()
        stopped = self.monitor.stopService()
        self.reactor.advance(workers.STOP_TIMEOUT)
        for process in self.reactor.processes:
            self.assertEqual(process.signals, ["TERM", "KILL"])
            process.end(signal.SIGKILL)
        self.successResultOf(stopped)
