"""Crashes of the daemon's processes (issue 17): a worker killed with
SIGKILL is restarted while the others serve, a worker that keeps dying
stops the daemon with status 1, the first process killed with SIGKILL
takes everything with it (workers, embedded PostgreSQL), a port in use
is one line and status 1, and SIGTERM is a clean stop with status 0, even
when a worker gets it twice (issue 27); the ready line comes after every
worker's start-up lines.

Real daemons: C{twistd marketplace --workers 2} on loopback ports, each
with an embedded PostgreSQL of its own.  Measured times go to the test log.
"""

import os
import signal
import socket
import time

from twisted.logger import Logger
from twisted.trial import unittest

from tests.crashes import Daemon, alive, call_fresh, sleep
from tests.ports import free_port_pair
from tests.support import payload_of

log = Logger()



#: A password the account rules accept.
PASSWORD = "crash-test-Pw-2026"


class WorkerCrashTests(unittest.TestCase):
    timeout = 300

    async def _account(self, port: int, username: str) -> str:
        """A new account's session."""
        account = {"username": username, "password": PASSWORD}
        payload_of(self, await call_fresh(port, "CreateAccount", account))
        return payload_of(self, await call_fresh(port, "Login", account))["session_id"]

    async def test_killed_worker_is_restarted_while_the_others_serve(self):
        daemon = Daemon(self).start()
        await daemon.serving()
        # Worker 1 serves too (the ready line waits for every worker): the
        # kill below is of a worker that was listening, not of one starting.
        await daemon.line_with("ready: ")
        [worker] = daemon.workers()
        seller = await self._account(daemon.ports["seller"], "sam")
        buyer = await self._account(daemon.ports["buyer"], "bea")
        calls = [
            (daemon.ports["seller"], "DisplayItemsForSale", seller),
            (daemon.ports["buyer"], "DisplayCart", buyer),
        ]

        os.kill(worker, signal.SIGKILL)
        killed = time.monotonic()
        # Rounds of fresh connections to both services, each with a request
        # that needs the database, until every one of a round is answered.
        served = None
        while time.monotonic() - killed < 10:
            try:
                for port, api, session in calls * 5:
                    payload_of(self, await call_fresh(port, api, {}, session))
                served = time.monotonic() - killed
                break
            except Exception:
                await sleep(0.05)
        log.info("measured: worker SIGKILL -> both services served fresh connections in"
                 " {seconds:.2f} s", seconds=served or -1)
        self.assertIsNotNone(served, "no service within 10 s of the kill:\n" + daemon.log())
        self.assertLess(served, 5.0)

        # The worker is started again, and serves its share.
        for _ in range(300):
            restarted = daemon.workers()
            if restarted and restarted != [worker] and daemon.log().count(
                "[worker 1] buyer service listening"
            ) == 2:
                break
            await sleep(0.1)
        else:
            self.fail("worker 1 was not restarted:\n" + daemon.log())
        log.info("measured: worker SIGKILL -> worker restarted and listening in {seconds:.2f} s",
                 seconds=time.monotonic() - killed)
        self.assertIn("worker 1 was killed by SIGKILL", daemon.log())
        for port, api, session in calls * 20:
            payload_of(self, await call_fresh(port, api, {}, session))

        processes = daemon.processes()
        self.assertEqual(await daemon.stop(), 0, daemon.log())
        self.assertEqual(await daemon.gone(), set(), "processes left after SIGTERM")
        self.assertTrue(processes)
        self.assertNotIn("Traceback", daemon.log())
        self.assertEqual(daemon.handles(), [])

    async def test_ctrl_c_stops_everything_cleanly(self):
        daemon = Daemon(self, own_group=True).start()
        await daemon.serving()
        self.assertEqual(len(daemon.workers()), 1)
        os.killpg(daemon.pid, signal.SIGINT)  # what Ctrl-C in a terminal does
        await daemon.ended
        self.assertEqual(daemon.exit_code(), 0, daemon.log())
        self.assertNotIn("Traceback", daemon.log())
        self.assertNotIn("was killed", daemon.log(), "a worker was taken for dead")
        self.assertEqual(await daemon.gone(), set(), "processes left after Ctrl-C")
        self.assertEqual(daemon.handles(), [])

    async def test_ready_line_then_sigterm_twice_to_a_worker_and_to_the_group(self):
        metrics = free_port_pair()
        daemon = Daemon(
            self, 2, f"--metrics=tcp:{metrics}:interface=127.0.0.1", own_group=True
        ).start()
        ready = await daemon.line_with("ready: ")
        ports = daemon.ports
        self.assertIn(
            f"ready: seller {ports['seller']}, buyer {ports['buyer']},"
            f" payments {ports['payments']}; in another terminal run", ready
        )
        self.assertIn(f"marketplace-seller-cli localhost {ports['seller']} or ", ready)
        self.assertIn(f"marketplace-buyer-cli localhost {ports['buyer']};", ready)
        self.assertTrue(ready.endswith(f"marketplace-top 127.0.0.1:{metrics}-{metrics + 1}"), ready)
        # Once, and after every start-up line of each process.
        lines = daemon.log().splitlines()
        self.assertEqual(sum("ready: " in line for line in lines), 1, daemon.log())
        for name in ("seller", "buyer", "payments"):
            for worker in ("", "[worker 1] "):
                listening = [n for n, line in enumerate(lines)
                             if f"{worker}{name} service listening" in line]
                self.assertTrue(listening, daemon.log())
                self.assertLess(max(listening), lines.index(ready), daemon.log())

        # SIGTERMs close together (make's process group, then worker 0), as
        # fast as they can be sent until the worker is gone: some come while
        # it stops, some as its Python ends.  It stops once, with status 0
        # and no traceback.  (Without the worker's own SIGTERM handler this
        # failed 3 runs in 3 with ReactorNotRunning.)
        [worker] = daemon.workers()
        deadline = time.monotonic() + 5
        while alive(worker) and time.monotonic() < deadline:
            try:
                os.kill(worker, signal.SIGTERM)
            except ProcessLookupError:
                break
        await daemon.line_with("worker 1 exited with status 0")
        self.assertNotIn("Traceback", daemon.log())
        self.assertNotIn("ReactorNotRunning", daemon.log())

        # SIGTERM to the whole group, as to make run's: every process gets
        # it, the workers once more from worker 0.
        for _ in range(300):  # worker 1 started again, and serving
            if daemon.log().count("[worker 1] buyer service listening") == 2:
                break
            await sleep(0.1)
        else:
            self.fail("worker 1 was not restarted:\n" + daemon.log())
        os.killpg(daemon.pid, signal.SIGTERM)
        await daemon.ended
        self.assertEqual(daemon.exit_code(), 0, daemon.log())
        self.assertNotIn("Traceback", daemon.log())
        self.assertEqual(await daemon.gone(), set(), "processes left after SIGTERM")

    async def test_killed_first_process_leaves_nothing_running(self):
        daemon = Daemon(self).start()
        await daemon.serving()
        processes = daemon.processes()
        postmaster = daemon.postmaster()
        self.assertIn(postmaster, processes)
        self.assertEqual(len(daemon.workers()), 1)

        os.kill(daemon.pid, signal.SIGKILL)
        killed = time.monotonic()
        left = await daemon.gone(60)
        log.info("measured: first process SIGKILL -> nothing left running in {seconds:.2f} s",
                 seconds=time.monotonic() - killed)
        self.assertEqual(left, set(), "processes left after the first one was killed")
        self.assertEqual(daemon.handles(), [], "the handle list keeps the dead process")

    async def test_worker_that_keeps_dying_stops_the_daemon(self):
        daemon = Daemon(self).start()
        await daemon.serving()
        killed = set()
        # Kill worker 1 each time it is started again, as soon as it is seen.
        while not daemon.ended.called:
            for pid in daemon.workers():
                if pid not in killed:
                    killed.add(pid)
                    os.kill(pid, signal.SIGKILL)
            await sleep(0.05)
        self.assertEqual(daemon.exit_code(), 1, daemon.log())
        self.assertEqual(len(killed), 5, daemon.log())
        self.assertIn("worker 1 cannot start: it was killed by SIGKILL 5 times in a row",
                      daemon.log())
        self.assertEqual(await daemon.gone(), set(), "processes left")

    async def test_port_in_use_is_one_line_and_status_1(self):
        for reuse in (False, True):
            taken = socket.socket()
            self.addCleanup(taken.close)
            if reuse:
                # As a second daemon with --workers would: SO_REUSEPORT lets
                # sockets of one user share a port without a word.
                taken.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            taken.bind(("127.0.0.1", 0))
            taken.listen()
            daemon = Daemon(self)
            daemon.ports["buyer"] = taken.getsockname()[1]
            daemon = Daemon(self, ports=daemon.ports).start()
            await daemon.ended
            self.assertEqual(daemon.exit_code(), 1, daemon.log())
            lines = [line for line in daemon.log().splitlines() if "cannot listen" in line]
            self.assertEqual(len(lines), 1, daemon.log())
            self.assertIn("Address already in use", lines[0])
            self.assertNotIn("Traceback", daemon.log())
            self.assertEqual(await daemon.gone(), set(), "processes left")
