"""tools/cpu_per_call.py's arithmetic: which seconds count, and the CPU
per call of each side (docs/PERFORMANCE.md, "The sixth at 100+100")."""

import os

from twisted.trial import unittest

from tools import cpu_per_call


class BusyStretchTests(unittest.TestCase):
    def test_the_sign_ups_and_the_ramps_are_left_out(self):
        # Sign-ups (the services hash passwords, the bench waits), then the
        # measuring, then the report.
        quiet = [{"services": 1.9, "postgres": 0.0, "bench": 0.0}] * 5
        measuring = [{"services": 0.7, "postgres": 0.9, "bench": 0.3 + n / 1000} for n in range(10)]
        after = [{"services": 0.0, "postgres": 0.0, "bench": 0.9}]
        busy = cpu_per_call.busy_stretch(quiet + measuring + after)
        self.assertEqual(busy, measuring[cpu_per_call.TRIM:-cpu_per_call.TRIM + 1])

    def test_nothing_busy(self):
        self.assertEqual(cpu_per_call.busy_stretch([]), [])
        self.assertEqual(cpu_per_call.busy_stretch([{"bench": 0.0}] * 3), [])


class PerCallTests(unittest.TestCase):
    def test_cores_over_calls(self):
        busy = [{"services": 0.6, "postgres": 0.9, "bench": 0.3}] * 2
        split = cpu_per_call.per_call(busy, 3000)
        self.assertAlmostEqual(split["services"], 200)
        self.assertAlmostEqual(split["postgres"], 300)
        self.assertAlmostEqual(split["bench"], 100)
        self.assertAlmostEqual(split["total"], 600)
        self.assertAlmostEqual(split["cores"], 1.8)

    def test_rates_between_samples(self):
        samples = [(0.0, {"postgres": 1.0}), (2.0, {"postgres": 2.0, "bench": 1.0})]
        self.assertEqual(cpu_per_call.rates(samples), [{"postgres": 0.5, "bench": 0.5}])


class ProcessTests(unittest.TestCase):
    def test_this_process_and_its_cpu(self):
        self.assertIn(os.getpid(), cpu_per_call.descendants(os.getpid()))
        self.assertGreater(cpu_per_call.cpu_seconds(os.getpid()), 0)
        self.assertEqual(cpu_per_call.cpu_seconds(2**22 + 1), 0.0)
