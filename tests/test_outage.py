"""What the log is told about outages and repeated problems (outage.py),
on a fake clock."""

from twisted.internet import task
from twisted.logger import Logger, LogLevel, formatEvent
from twisted.trial import unittest

from marketplace.frame.quietlog import LogLimiter, describe
from marketplace.postgres.outage import REMIND_EVERY, Outage


class LogLimiterTests(unittest.SynchronousTestCase):
    def setUp(self):
        self.clock = task.Clock()
        self.events = []
        self.limiter = LogLimiter(Logger(observer=self.events.append), self.clock, 5.0)

    def lines(self):
        return [formatEvent(e) for e in self.events]

    def test_one_line_per_key_every_few_seconds(self):
        for _ in range(1000):
            self.limiter.emit("a", LogLevel.info, "problem {n}", n=1)
        self.limiter.emit("b", LogLevel.info, "other")
        self.assertEqual(self.lines(), ["problem 1", "other"])
        self.clock.advance(5)
        self.limiter.emit("a", LogLevel.info, "problem {n}", n=2)
        self.assertEqual(self.lines()[-1], "problem 2 (999 more like it in the last 5 s)")

    def test_keys_are_bounded(self):
        for n in range(LogLimiter.MAX_KEYS * 3):
            self.limiter.emit(n, LogLevel.info, "x")
            self.clock.advance(1)
        self.assertLessEqual(len(self.limiter._last), LogLimiter.MAX_KEYS)


class OutageTests(unittest.SynchronousTestCase):
    def setUp(self):
        self.clock = task.Clock()
        self.events = []
        self.outage = Outage("product", self.clock)
        log = Logger(observer=self.events.append)
        self.outage.log = log
        self.outage._limiter.log = log

    def lines(self):
        return [formatEvent(e) for e in self.events]

    def test_down_once_with_the_reason_then_back_with_the_count(self):
        for _ in range(50):
            self.outage.unreachable("OperationalError: connection refused")
            for _ in range(100):
                self.outage.call_failed()
            self.clock.advance(0.1)
        self.outage.reachable()
        self.assertEqual(
            self.lines(),
            [
                "the product database is down (OperationalError: connection refused);"
                " requests that need it are answered UNAVAILABLE until it is back",
                "the product database is back after 5.0 s; 5000 requests failed meanwhile",
            ],
        )
        self.outage.reachable()
        self.assertEqual(len(self.events), 2)

    def test_reminder_while_down(self):
        self.outage.unreachable("r")
        self.clock.advance(REMIND_EVERY)
        self.outage.call_failed()
        self.outage.unreachable("r")
        self.outage.unreachable("r")
        self.assertEqual(len(self.events), 2)
        self.assertIn("still down after 30 s (r); 1 requests failed so far", self.lines()[1])

    def test_lost_connections_told_once_per_reason(self):
        for _ in range(8):
            self.outage.connection_lost("terminated")
        self.assertEqual(len(self.events), 1)
        self.assertFalse(self.outage.down)

    def test_describe(self):
        self.assertEqual(describe(ValueError()), "ValueError")
        self.assertEqual(describe(ValueError("a\n  b")), "ValueError: a b")
        self.assertLess(len(describe(ValueError("x" * 1000))), 230)
