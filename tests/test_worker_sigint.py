"""A worker process ignores a Ctrl-C that comes while it is starting
(worker 0 alone acts on Ctrl-C and stops the others): worker 0 starts it
with SIGINT blocked, and the worker ignores SIGINT before unblocking it.
Before, a Ctrl-C in the first milliseconds of a worker's start printed a
KeyboardInterrupt traceback from it."""

import os
import signal
import subprocess
import sys

from twisted.trial import unittest

from marketplace.daemon import workers

_PROGRAM = workers.IGNORE_SIGINT + " import time; time.sleep(0.3); print('alive')"


def _start_and_interrupt(blocked: bool):
    """Start the program, send it SIGINT at once (it is still starting
    Python), and return its status, output and errors."""
    command = [sys.executable, "-c", _PROGRAM]
    if blocked:
        with workers.sigint_blocked():
            child = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    else:
        child = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    os.kill(child.pid, signal.SIGINT)
    out, err = child.communicate(timeout=30)
    return child.returncode, out, err


class CtrlCWhileStartingTests(unittest.TestCase):
    def test_started_with_sigint_blocked_it_lives_on(self):
        for _ in range(5):
            status, out, err = _start_and_interrupt(blocked=True)
            self.assertEqual((status, out), (0, b"alive\n"), err)
            self.assertNotIn(b"Traceback", err)

    def test_started_without_it_dies_of_it(self):
        # What the block prevents: the same program, interrupted as early.
        status, out, _ = _start_and_interrupt(blocked=False)
        self.assertNotEqual((status, out), (0, b"alive\n"))

    def test_the_block_ends_with_the_start(self):
        with workers.sigint_blocked():
            self.assertIn(signal.SIGINT, signal.pthread_sigmask(signal.SIG_BLOCK, []))
        self.assertNotIn(signal.SIGINT, signal.pthread_sigmask(signal.SIG_BLOCK, []))

    def test_the_worker_program_starts_so(self):
        program = workers._WORKER_MAIN.format(number=3)
        self.assertTrue(program.startswith(workers.IGNORE_SIGINT))
        compile(program, "<worker 3>", "exec")
