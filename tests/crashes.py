"""A real marketplace daemon to crash: C{twistd marketplace --workers 2} on
loopback ports and a data folder of its own, with an embedded PostgreSQL,
and what is needed to find, kill and count its processes.
"""

import os
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional, Set

import psutil
from twisted.internet import defer, protocol, reactor, task
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.logger import Logger

from tests.support import WireClient
from tests.ports import free_port  # noqa: F401 (used by other tests too)

ROOT = Path(__file__).resolve().parent.parent
TWISTD = Path(sys.executable).parent / "twistd"

log = Logger()


def sleep(seconds: float) -> defer.Deferred:
    return task.deferLater(reactor, seconds, lambda: None)


def alive(pid: int) -> bool:
    """Whether a process of pid C{pid} runs now (any process: pids come
    round again, see L{running})."""
    try:
        return running(psutil.Process(pid))
    except psutil.Error:
        return False


def running(process: psutil.Process) -> bool:
    """Whether C{process} still runs: not a zombie, and its pid not taken
    by a newer process.  Pids come round again within a run of the suite
    (it starts tens of thousands of processes, and pid_max may be 32,768):
    a process remembered by its pid alone may be another one by then."""
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


class _Output(protocol.ProcessProtocol):
    def __init__(self) -> None:
        self.output: List[bytes] = []
        self.ended: defer.Deferred = defer.Deferred()
        self.reason = None

    def outReceived(self, data: bytes) -> None:  # noqa: N802 (Twisted name)
        self.output.append(data)

    errReceived = outReceived

    def processEnded(self, reason) -> None:  # noqa: N802 (Twisted name)
        self.reason = reason.value
        self.ended.callback(reason.value)


class Daemon:
    """C{twistd -n marketplace --workers N} in a folder of its own."""

    def __init__(
        self, testcase, workers: int = 2, *args: str, ports=None, own_group=False
    ) -> None:
        self.testcase = testcase
        self.cwd = Path(testcase.mktemp()).resolve()
        self.cwd.mkdir(parents=True)
        self.pgdata = self.cwd / "data" / "postgres"
        self.ports = ports or {name: free_port() for name in ("seller", "buyer", "payments")}
        self.args = [
            f"--workers={workers}",
            f"--data-dir={self.cwd / 'data'}",
            "--approval-rate=1",
            # Every client of the tests comes from 127.0.0.1.
            "--signups-per-address=1000",
            "--hash-per-address=1000",
            "--hash-queue=1000",
            "--hash-memory=1024",  # (see tests/support.py, TEST_HASH_MEMORY)
            f"--payments=tcp:host=127.0.0.1:port={self.ports['payments']}",
            *[f"--{name}-listen=tcp:{port}:interface=127.0.0.1" for name, port in self.ports.items()],
            *args,
        ]
        # In a process group of its own, as in a terminal: Ctrl-C reaches
        # the whole group.
        self.own_group = own_group
        self._out = _Output()
        self.process = None
        self.seen: Dict[int, psutil.Process] = {}

    def start(self) -> "Daemon":
        env = {k: v for k, v in os.environ.items() if not k.startswith("MARKETPLACE_")}
        env["PYTHONPATH"] = str(ROOT)
        command = [str(TWISTD), "--nodaemon", "--pidfile=", "marketplace", *self.args]
        if self.own_group:
            command = ["setsid", *command]  # (exec'd: the pid stays twistd's)
        self.process = reactor.spawnProcess(
            self._out, command[0], command, env=env, path=str(self.cwd)
        )
        self.pid = self.process.pid
        self.testcase.addCleanup(self._clean_up)
        return self

    @property
    def ended(self) -> defer.Deferred:
        return self._out.ended

    def log(self) -> str:
        return b"".join(self._out.output).decode(errors="replace")

    def exit_code(self) -> Optional[int]:
        """The exit status, None if the process ended of a signal."""
        return self._out.reason.exitCode

    def workers(self) -> List[int]:
        """Pids of the worker processes (not worker 0)."""
        try:
            children = psutil.Process(self.pid).children()
        except psutil.Error:
            return []
        return [c.pid for c in children if "marketplace.daemon.workers" in " ".join(_cmdline(c))]

    def postmaster(self) -> Optional[int]:
        """Pid of the embedded PostgreSQL, from its postmaster.pid."""
        try:
            return int((self.pgdata / "postmaster.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def handles(self) -> List[int]:
        import json

        try:
            return json.loads((self.pgdata / ".handle_pids.json").read_text())
        except (OSError, ValueError):
            return []

    def processes(self) -> Set[int]:
        """Every process of this daemon: twistd, its descendants, the
        embedded PostgreSQL and its children; remembered, so that those
        seen once are still looked for after their parent is gone."""
        roots = [] if self.ended.called else [self.pid]  # (twistd's pid, once reaped, is free)
        postmaster = self.postmaster()
        if postmaster is not None:
            roots.append(postmaster)
        for root in roots:
            try:
                top = psutil.Process(root)
                if root == postmaster and str(self.pgdata) not in " ".join(_cmdline(top)):
                    continue  # a stale postmaster.pid, its pid another process's now
                self.seen.update({p.pid: p for p in [top, *top.children(recursive=True)]})
            except psutil.Error:
                pass
        # The guard runs in a session of its own, but is a child of twistd.
        return {pid for pid, process in self.seen.items() if running(process)}

    async def serving(self, timeout: float = 120.0) -> None:
        """Wait until every service answers a request on a fresh connection."""
        deadline = time.monotonic() + timeout
        while True:
            if self.ended.called:
                raise AssertionError("the daemon ended:\n" + self.log())
            try:
                for name in ("seller", "buyer", "payments"):
                    await call_fresh(self.ports[name], "GetPayment" if name == "payments" else "Login")
                self.processes()
                return
            except Exception:
                if time.monotonic() > deadline:
                    raise AssertionError("the daemon did not serve:\n" + self.log())
                await sleep(0.2)

    async def line_with(self, text: str, timeout: float = 120.0) -> str:
        """Wait for the first line of the log that holds C{text}; that line."""
        deadline = time.monotonic() + timeout
        while True:
            for line in self.log().splitlines():
                if text in line:
                    return line
            if self.ended.called or time.monotonic() > deadline:
                raise AssertionError(f"no line with {text!r}:\n" + self.log())
            await sleep(0.1)

    async def gone(self, timeout: float = 60.0) -> Set[int]:
        """Wait until no process of the daemon is left; those that are."""
        deadline = time.monotonic() + timeout
        while True:
            left = self.processes()
            if not left or time.monotonic() > deadline:
                return left
            await sleep(0.2)

    async def stop(self) -> Optional[int]:
        """SIGTERM, and the exit status once the daemon ended."""
        self.process.signalProcess("TERM")
        await self.ended
        return self.exit_code()

    async def _clean_up(self) -> None:
        self.processes()
        if not self.ended.called:
            self.process.signalProcess("KILL")
            await self.ended
        left = await self.gone(30)
        for pid in left:
            try:
                self.seen[pid].kill()  # (psutil checks that the pid is still its)
            except psutil.Error:
                pass


def _cmdline(process) -> List[str]:
    try:
        return process.cmdline()
    except psutil.Error:
        return []


async def call_fresh(port: int, api: str, payload=None, session_id=None) -> dict:
    """One request on a connection of its own; the answer."""
    client = await connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", port), WireClient())
    try:
        return await client.request(api, payload or {}, session_id).addTimeout(10, reactor)
    finally:
        client.transport.loseConnection()


async def connect(port: int) -> WireClient:
    return await connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", port), WireClient())
