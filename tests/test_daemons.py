"""The real twistd plugins, as separate processes on the embedded database.

Two daemons on one data folder share one embedded PostgreSQL, which stops
when the last of them stops.  The daemons are started with the twistd
options docs/OPERATING.md gives for the foreground, from one working folder.
"""

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

from twisted.internet import defer, protocol, reactor, task
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.trial import unittest

from tests.support import WireClient, payload_of
from tests.test_seller_api import PHONE_CASE
from tests.ports import free_port  # noqa: F401 (used by other tests too)

ROOT = Path(__file__).resolve().parent.parent
TWISTD = Path(sys.executable).parent / "twistd"


def readme_foreground_options() -> list:
    """The twistd options before the plugin in docs/OPERATING.md's foreground commands
    (all the same), e.g. C{["--nodaemon", "--pidfile="]}."""
    found = set(
        re.findall(r"^ +\.venv/bin/twistd (.*?) marketplace\S* ", (ROOT / "docs" / "OPERATING.md").read_text(),
                   re.M)
    )
    foreground = [line for line in found if "--nodaemon" in line.split()]
    assert len(foreground) == 1, f"docs/OPERATING.md's foreground commands: {found}"
    return foreground[0].split()


class _Daemon(protocol.ProcessProtocol):
    def __init__(self):
        self.output = []
        self.ended = defer.Deferred()

    def outReceived(self, data):
        self.output.append(data)

    errReceived = outReceived

    def log(self) -> str:
        return b"".join(self.output).decode(errors="replace")

    def processEnded(self, reason):
        # twistd ends itself with the signal that stopped it, once stopped.
        value = reason.value
        self.ended.callback(value.exitCode == 0 or value.signal == signal.SIGTERM)


def start_daemon(testcase, cwd: Path, plugin: str, *args: str, **variables: str) -> _Daemon:
    """Run C{twistd OPTIONS PLUGIN ARGS} with this checkout's code, the
    foreground OPTIONS of docs/OPERATING.md and the environment C{variables};
    killed after the test."""
    daemon = _Daemon()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MARKETPLACE_")}
    env["PYTHONPATH"] = str(ROOT)
    env.update(variables)
    command = [str(TWISTD), *readme_foreground_options(), plugin, *args]
    process = reactor.spawnProcess(daemon, command[0], command, env=env, path=str(cwd))

    def kill():
        if not daemon.ended.called:
            process.signalProcess("KILL")
            return daemon.ended

    testcase.addCleanup(kill)
    daemon.process = process
    return daemon


async def connect_when_up(port: int, daemon: _Daemon) -> WireClient:
    for _ in range(600):
        if daemon.ended.called:
            raise AssertionError(daemon.log())
        try:
            return await connectProtocol(
                TCP4ClientEndpoint(reactor, "127.0.0.1", port), WireClient()
            )
        except Exception:
            await task.deferLater(reactor, 0.1, lambda: None)
    raise AssertionError("the daemon did not listen within 60 s")


async def line_with(daemon: _Daemon, text: str) -> str:
    """The first line of the daemon's log with C{text}, once there is one."""
    for _ in range(600):
        for line in daemon.log().splitlines():
            if text in line:
                return line
        await task.deferLater(reactor, 0.1, lambda: None)
    raise AssertionError(f"no line with {text!r}:\n" + daemon.log())


class DaemonTests(unittest.TestCase):
    timeout = 180

    def test_pid_and_log_files_are_not_committed(self):
        # twistd writes twistd.pid (and, daemonised, twistd.log) where it runs.
        for name in ("twistd.pid", "twistd.log", "seller.pid", "seller.log"):
            ignored = subprocess.run(["git", "check-ignore", "-q", name], cwd=ROOT)
            self.assertEqual(ignored.returncode, 0, f"{name} is not in .gitignore")

    async def test_two_daemons_share_the_embedded_database(self):
        cwd = Path(self.mktemp()).resolve()
        cwd.mkdir(parents=True)
        data = cwd / "data"
        seller_port, buyer_port = free_port(), free_port()
        seller_daemon = start_daemon(
            self, cwd, "marketplace-seller", "--listen", f"tcp:{seller_port}:interface=127.0.0.1",
            "--data-dir", str(data),
        )
        seller = await connect_when_up(seller_port, seller_daemon)
        # One process: ready once it listens, with the seller's program.
        ready = await line_with(seller_daemon, "ready: ")
        self.assertTrue(ready.endswith(
            f"] ready: seller {seller_port}; in another terminal run"
            f" {TWISTD.parent / 'marketplace-seller-cli'} localhost {seller_port}"
        ), ready)
        buyer_daemon = start_daemon(
            self, cwd, "marketplace-buyer", "--listen", f"tcp:{buyer_port}:interface=127.0.0.1",
            "--data-dir", str(data),
        )
        buyer = await connect_when_up(buyer_port, buyer_daemon)

        account = {"username": "s", "password": "p-passphrase"}
        payload_of(self, await seller.request("CreateAccount", account))
        session = payload_of(self, await seller.request("Login", account))["session_id"]
        item = await seller.request("RegisterItemForSale", PHONE_CASE, session)
        item_id = payload_of(self, item)["item_id"]

        account = {"username": "b", "password": "p-passphrase"}
        payload_of(self, await buyer.request("CreateAccount", account))
        session = payload_of(self, await buyer.request("Login", account))["session_id"]
        found = await buyer.request("GetItem", {"item_id": item_id}, session)
        self.assertEqual(payload_of(self, found)["item_name"], "Phone case")

        seller.transport.loseConnection()
        seller_daemon.process.signalProcess(signal.SIGTERM)
        self.assertTrue(await seller_daemon.ended, seller_daemon.log())
        pid_file = data / "postgres" / "postmaster.pid"
        self.assertTrue(pid_file.exists(), "the buyer daemon still uses the server")
        found = await buyer.request("GetItem", {"item_id": item_id}, session)
        payload_of(self, found)

        buyer.transport.loseConnection()
        buyer_daemon.process.signalProcess(signal.SIGTERM)
        self.assertTrue(await buyer_daemon.ended, buyer_daemon.log())
        self.assertFalse(pid_file.exists(), "the last daemon stopped the server")

    async def test_payments_daemon_from_the_environment_with_workers(self):
        # Every option from the environment: where to listen, the data
        # folder, and two worker processes (marketplace-payments has them too).
        cwd = Path(self.mktemp()).resolve()
        cwd.mkdir(parents=True)
        port = free_port()
        daemon = start_daemon(
            self, cwd, "marketplace-payments",
            MARKETPLACE_LISTEN=f"tcp:{port}:interface=127.0.0.1",
            MARKETPLACE_DATA_DIR=str(cwd / "data"),
            MARKETPLACE_WORKERS="2",
            MARKETPLACE_APPROVAL_RATE="0",
        )
        client = await connect_when_up(port, daemon)
        for _ in range(600):
            if "started 1 more worker processes" in daemon.log():
                break
            await task.deferLater(reactor, 0.1, lambda: None)
        else:
            self.fail(daemon.log())
        card = {
            "name": "B", "card_number": "4111 1111 1111 1111", "expiration_date": "12/99",
            "security_code": "123", "amount": 5, "idempotency_key": "k1",
        }
        # No secret configured: the daemon made one in its data folder.
        secret = (cwd / "data" / "payments.secret").read_text().strip()
        answer = payload_of(self, await client.request("AuthorizePayment", card, secret))
        self.assertFalse(answer["approved"], "MARKETPLACE_APPROVAL_RATE=0 was ignored")
        self.assertFalse((cwd / "twistd.pid").exists())
        self.assertTrue((cwd / "data" / "postgres").is_dir())

        client.transport.loseConnection()
        # SIGTERM to the process group (make run's, at a kill of make): the
        # worker gets it, and again from worker 0; it stops once, quietly.
        ready = await line_with(daemon, "ready: ")  # worker 1 serving too
        self.assertEqual(daemon.log().count("payments service listening on"), 2, daemon.log())
        # No terminal program for this service, no metrics to watch.
        self.assertTrue(ready.endswith(f"] ready: payments {port}"), ready)
        worker = int(re.search(r"worker 1 started \(pid (\d+)\)", daemon.log()).group(1))
        os.kill(worker, signal.SIGTERM)
        daemon.process.signalProcess(signal.SIGTERM)
        self.assertTrue(await daemon.ended, daemon.log())
        self.assertNotIn("Traceback", daemon.log())
        self.assertNotIn("ReactorNotRunning", daemon.log())
        # The workers do not log each port they open: one line for worker 0's.
        self.assertEqual(daemon.log().count(" starting on "), 1, daemon.log())
