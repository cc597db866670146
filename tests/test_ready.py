"""The ready line of a daemon (issue 27, point 10): its text, and how
worker 0 learns that each worker serves.  No network: the daemons that
log it are in tests/test_crash_workers.py and tests/test_daemons.py."""

from pathlib import Path

from twisted.internet import task
from twisted.internet.address import IPv4Address, UNIXAddress
from twisted.logger import globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from marketplace.daemon.ready import Listening, program_path, ready_line, watch_target
from marketplace.daemon.workers import SERVING, WorkerMonitor


def tcp(port: int, host: str = "127.0.0.1") -> IPv4Address:
    return IPv4Address("TCP", host, port)


def bin_program(name: str) -> str:
    return f".venv/bin/{name}"


MAKE_RUN = [
    Listening("payments", tcp(8082)),
    Listening("seller", tcp(8080)),
    Listening("buyer", tcp(8081)),
]


class ReadyLineTests(SynchronousTestCase):
    def test_make_run(self):
        self.assertEqual(
            ready_line(MAKE_RUN, watch_target(tcp(9180), 4, True), program=bin_program),
            "ready: seller 8080, buyer 8081, payments 8082; in another terminal run"
            " .venv/bin/marketplace-seller-cli or .venv/bin/marketplace-buyer-cli;"
            " watch: .venv/bin/marketplace-top 127.0.0.1:9180-9183",
        )

    def test_without_metrics_no_watch_command(self):
        line = ready_line(MAKE_RUN, None, program=bin_program)
        self.assertNotIn("watch", line)
        self.assertNotIn("marketplace-top", line)

    def test_other_ports_and_hosts_are_given_to_the_programs(self):
        line = ready_line(
            [
                Listening("seller", tcp(17000, "0.0.0.0")),
                Listening("seller", tcp(17010, "10.0.0.5")),
                Listening("buyer", UNIXAddress("/run/buyer.sock")),
            ],
            program=bin_program,
        )
        self.assertEqual(
            line,
            "ready: seller 17000 and 10.0.0.5:17010, buyer /run/buyer.sock;"
            " in another terminal run .venv/bin/marketplace-seller-cli localhost 17000"
            " or .venv/bin/marketplace-buyer-cli --connect unix:path=/run/buyer.sock",
        )

    def test_payments_alone_names_no_terminal_program(self):
        self.assertEqual(
            ready_line([Listening("payments", tcp(8082))], program=bin_program),
            "ready: payments 8082",
        )

    def test_watch_target(self):
        self.assertEqual(watch_target(tcp(9180), 1, True), "127.0.0.1:9180")
        self.assertEqual(watch_target(tcp(9180, "0.0.0.0"), 3, True), "127.0.0.1:9180-9182")
        # Port 0: the other workers' ports are their own choice, unknown here.
        self.assertEqual(watch_target(tcp(41234), 3, False), "127.0.0.1:41234")

    def test_program_path(self):
        here = Path(self.mktemp()).resolve()
        (here / ".venv" / "bin").mkdir(parents=True)
        (here / ".venv" / "bin" / "marketplace-top").touch()
        self.assertEqual(
            program_path("marketplace-top", here / ".venv" / "bin", here),
            ".venv/bin/marketplace-top",
        )
        elsewhere = here / "elsewhere"
        self.assertEqual(
            program_path("marketplace-top", here / ".venv" / "bin", elsewhere),
            str(here / ".venv" / "bin" / "marketplace-top"),
        )
        self.assertEqual(program_path("not-installed", here / ".venv" / "bin", here),
                         "not-installed")


class WorkersServingTests(SynchronousTestCase):
    """Worker 0 reads each worker's SERVING line from what it relays."""

    def setUp(self):
        self.published = []
        globalLogPublisher.addObserver(self.published.append)
        self.addCleanup(globalLogPublisher.removeObserver, self.published.append)

    def relay(self, monitor: WorkerMonitor, worker: int, line: str) -> None:
        # What Twisted's ProcessMonitor does with each line a worker writes.
        monitor.log.info("[{tag}] {line}", tag=f"worker {worker}", line=line, stream="stdout")

    def test_fires_once_every_worker_serves(self):
        monitor = WorkerMonitor(3, "m", [], None, [], task.Clock())
        serving = monitor.all_serving()
        self.relay(monitor, 1, "databases ready")
        self.relay(monitor, 1, SERVING)
        self.relay(monitor, 1, SERVING)  # worker 1 started again
        self.assertFalse(serving.called)
        self.relay(monitor, 2, SERVING)
        self.assertTrue(serving.called)
        self.assertTrue(monitor.all_serving().called)
        # The other lines are relayed, the SERVING lines are not.
        lines = [e.get("line") for e in self.published if e.get("log_source") is monitor]
        self.assertEqual(lines, ["databases ready"])

    def test_a_line_on_stderr_is_no_sign(self):
        monitor = WorkerMonitor(2, "m", [], None, [], task.Clock())
        serving = monitor.all_serving()
        monitor.log.info("[{tag}] {line}", tag="worker 1", line=SERVING, stream="stderr")
        self.assertFalse(serving.called)
