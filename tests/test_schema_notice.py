"""The daemon's schema service says when applying schema.sql takes long
(the first start after an upgrade may make search's tables again), and
says nothing when it does not."""

from twisted.internet import defer, task
from twisted.logger import Logger
from twisted.trial import unittest

from marketplace.postgres import schema


class _Named:
    name = "product"


class SlowApplyTests(unittest.TestCase):
    def setUp(self):
        self.clock = task.Clock()
        self.applying = defer.Deferred()
        self.patch(schema, "apply_schema", lambda database, part, unless_applied: self.applying)
        self.events = []
        self.service = schema.Schema([_Named()], self.clock)
        self.service.log = Logger(observer=self.events.append)

    def said(self):
        return [event["log_format"].split(" (")[0] for event in self.events]

    def test_a_slow_apply_is_told_then_and_when_done(self):
        started = self.service.startService()
        self.clock.advance(schema.SLOW_APPLY - 0.1)
        self.assertEqual(self.said(), [])
        self.clock.advance(0.2)
        self.assertEqual(self.said(), ["still applying schema.sql to the {name} database"])
        self.clock.advance(30)
        self.applying.callback(None)
        self.successResultOf(started)
        self.assertEqual(
            self.said()[-1], "schema.sql applied to the {name} database in {seconds:.0f} s"
        )
        self.assertEqual(round(self.events[-1]["seconds"]), 35)

    def test_a_quick_apply_says_nothing(self):
        started = self.service.startService()
        self.clock.advance(1)
        self.applying.callback(None)
        self.successResultOf(started)
        self.clock.advance(60)
        self.assertEqual(self.said(), [])
        self.assertEqual(self.clock.getDelayedCalls(), [])
