"""Several processes serving one port: C{--workers N}.

The daemon that twistd starts is worker 0: it owns the databases (and the
embedded PostgreSQL, which is thus started once) and, once it listens,
runs N-1 more processes of the same daemon under Twisted's
L{ProcessMonitor}, which restarts one that dies.  Every process listens on
the same ports with C{SO_REUSEPORT}, so the kernel spreads new connections
over them and each process has a core's worth of Python to serve its
share; when one dies the others take its share of new connections.

A worker stops when it gets SIGTERM (from worker 0, which alone acts on
Ctrl-C) or when worker 0 goes away, however it ends: its stdin, a pipe
from worker 0, then closes.  Worker 0 stops its workers first, waits for
them, and only then closes its own databases and lets go of the embedded
server.
"""

import json
import os
import re
import signal
import sys
from contextlib import contextmanager
from dataclasses import replace
from typing import Dict, List, Optional, Set

from twisted.application.service import Service
from twisted.internet import defer, protocol
from twisted.logger import Logger, globalLogPublisher
from twisted.runner.procmon import ProcessMonitor

from marketplace.daemon import exits
from marketplace.daemon.service import ApiServer, Backend
from marketplace.postgres.embedded import same_code_env

#: Seconds a worker has to stop before it is killed.
STOP_TIMEOUT = 30.0

#: Failed starts in a row after which a worker is given up (and the daemon stops).
MAX_QUICK_DEATHS = 5

#: The environment variable that carries a worker's settings.
SETUP_VARIABLE = "MARKETPLACE_WORKER_SETUP"

#: The line a worker writes once each of its services listens; worker 0
#: reads it from the worker's output (and does not relay it).
SERVING = "every service of this worker listens"

#: The start of a worker process's program.  Ctrl-C reaches the whole
#: process group: only worker 0 acts on it (and stops the others with
#: SIGTERM), so the others ignore it from their first moment.  Python
#: handles SIGINT from before the first line runs, so worker 0 starts them
#: with SIGINT blocked (L{sigint_blocked}); they ignore it (which drops one
#: that came meanwhile), then unblock it.
IGNORE_SIGINT = (
    "import signal; signal.signal(signal.SIGINT, signal.SIG_IGN);"
    " signal.pthread_sigmask(signal.SIG_UNBLOCK, [signal.SIGINT]);"
)

#: A worker process's program.
_WORKER_MAIN = IGNORE_SIGINT + " import marketplace.daemon.workers as w; w.worker_main({number})"


@contextmanager
def sigint_blocked():
    """SIGINT blocked in this thread meanwhile (a process started now
    starts with it blocked); one that comes meanwhile is delivered after."""
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})


def option_args(options) -> List[str]:
    """Command-line arguments that give a fresh Options of the same class
    the values of C{options} (but C{--workers})."""
    args = []
    flags = {flag[0] for flag in getattr(options, "optFlags", [])}
    for name, value in options.items():
        if name == "workers" or value is None:
            continue
        if name in flags:
            if value:
                args.append(f"--{name}")
        elif isinstance(value, (list, tuple)):
            args += [f"--{name}={one}" for one in value]
        elif isinstance(value, (str, int, float)):
            args.append(f"--{name}={value}")
    return args


class WorkerMonitor(ProcessMonitor):
    """Runs worker processes 1 to C{count - 1} of a daemon once worker 0's
    listeners are up, restarts one that dies, and stops them before the
    rest of the daemon.

    Twisted's L{ProcessMonitor} does the running and restarting: a worker
    that had served for more than L{threshold} seconds is restarted at
    once, one that died sooner after L{ProcessMonitor.minRestartDelay}
    seconds, doubled after each such death.  On top of it: every death is
    logged, a worker that dies L{MAX_QUICK_DEATHS} times in a row without
    lasting L{threshold} seconds stops the daemon (exit status 1),
    stopping waits for the workers to be gone, and L{all_serving} tells
    when every worker has said it serves (for the ready line, ready.py).
    """

    log = Logger()

    #: Seconds a worker must live for its death not to count as a failed start.
    threshold = 10.0
    #: Seconds a worker has to stop (drain its connections) before it is killed.
    killTime = STOP_TIMEOUT

    @classmethod
    def of(cls, top, options, reactor) -> "WorkerMonitor":
        """The monitor of the workers of daemon C{top}, which C{options}
        (of a plugin module's Options) built."""
        backend = next(child for child in top if isinstance(child, Backend))
        servers = [child for child in top if isinstance(child, ApiServer)]
        return cls(
            options.settings.workers, type(options).__module__, option_args(options),
            backend, servers, reactor,
        )

    def __init__(self, count: int, module: str, args: List[str], backend, servers, reactor):
        super().__init__(reactor)
        self.count = count
        self.module = module
        self.args = args
        self.backend = backend
        self.servers = servers
        self.quick_deaths: Dict[str, int] = {}
        self._gone: List[defer.Deferred] = []
        self._serving: Set[str] = set()
        self._serving_waiters: List[defer.Deferred] = []
        # ProcessMonitor relays each line a worker writes through this
        # log (as "[{tag}] {line}"): a worker's SERVING line is read here.
        self.log = Logger(
            namespace=f"{__name__}.{type(self).__name__}", source=self, observer=self._observe
        )

    def _observe(self, event: dict) -> None:
        if event.get("stream") == "stdout" and event.get("line") == SERVING:
            self._serving.add(event.get("tag"))
            if self._serving >= {f"worker {n}" for n in range(1, self.count)}:
                waiting, self._serving_waiters = self._serving_waiters, []
                for d in waiting:
                    d.callback(None)
            return
        if event.get("line", "x").strip() == "":
            return  # (a worker's blank line would be a "[worker N] " line)
        globalLogPublisher(event)

    def all_serving(self) -> defer.Deferred:
        """A Deferred that fires once every worker process has listened on
        all its ports (each at least once: a restarted one is not waited for
        again)."""
        if self._serving >= {f"worker {n}" for n in range(1, self.count)}:
            return defer.succeed(None)
        d: defer.Deferred = defer.Deferred()
        self._serving_waiters.append(d)
        return d

    def startService(self):
        # The workers are added (and so started) once this process listens:
        # a port already in use is then found once, here, and the workers
        # get the connection strings of a database that is up.
        Service.startService(self)
        d = self.backend.ready()
        d.addCallback(
            lambda _: defer.gatherResults(
                [s.listening() for s in self.servers], consumeErrors=True
            )
        )
        d.addCallbacks(lambda _: self._add_workers(), lambda f: None)

    def _dsns(self) -> Dict[str, Optional[str]]:
        backend = self.backend
        return {
            "customer_db": backend.customer.dsn,
            "product_db": backend.product.dsn,
            "payments_db": backend.payments.dsn,
        }

    def _add_workers(self) -> None:
        if not self.running:
            return
        # The settings go through the environment, not the command line, as
        # a connection string may hold a password.
        env = same_code_env()
        env[SETUP_VARIABLE] = json.dumps(
            {"module": self.module, "args": self.args, "dsns": self._dsns(), "parent": os.getpid()}
        )
        for number in range(1, self.count):
            command = [sys.executable, "-c", _WORKER_MAIN.format(number=number)]
            self.addProcess(f"worker {number}", command, env=env)
        self.log.info("started {n} more worker processes", n=self.count - 1)

    def startProcess(self, name: str) -> None:  # noqa: N802 (Twisted name)
        with sigint_blocked():
            super().startProcess(name)
        proto = self.protocols.get(name)
        if proto is not None and proto.transport is not None:
            self.log.info("{name} started (pid {pid})", name=name, pid=proto.transport.pid)

    def _monitoredProcessExited(self, name: str, reason=None) -> None:  # noqa: N802
        # ProcessMonitor's one hook on a process's end (its public
        # connectionLost is deprecated and no longer called).
        lived = self._clock.seconds() - self.timeStarted[name]
        super()._monitoredProcessExited(name, reason)
        if not self.running or name not in self._processes:
            self._check_gone()
            return
        how = _ending(reason)
        if lived >= self.threshold:
            self.quick_deaths[name] = 0
            self.log.warn(
                "{name} {how} after {lived:.0f} s; starting it again", name=name, how=how, lived=lived
            )
            return
        self.quick_deaths[name] = self.quick_deaths.get(name, 0) + 1
        if self.quick_deaths[name] >= MAX_QUICK_DEATHS:
            exits.fail(
                self._reactor,
                "{name} cannot start: it {how} {n} times in a row within {threshold:.0f} s"
                " of starting; stopping the daemon",
                name=name, how=how, n=self.quick_deaths[name], threshold=self.threshold,
            )
            return
        delayed = self.restart.get(name)
        delay = delayed.getTime() - self._clock.seconds() if delayed is not None else 0
        self.log.warn(
            "{name} {how} {lived:.1f} s after starting; starting it again in {delay:.0f} s",
            name=name, how=how, lived=lived, delay=delay,
        )

    def stopService(self):
        super().stopService()
        if not self.protocols:
            return None
        gone: defer.Deferred = defer.Deferred()
        self._gone.append(gone)
        return gone

    def _check_gone(self) -> None:
        if not self.protocols:
            waiting, self._gone = self._gone, []
            for d in waiting:
                d.callback(None)


def _ending(reason) -> str:
    """How a process ended, in words."""
    value = getattr(reason, "value", None)
    if getattr(value, "signal", None):
        return f"was killed by {signal.Signals(value.signal).name}"
    if getattr(value, "exitCode", None) is not None:
        return f"exited with status {value.exitCode}"
    return "ended"


#: The line Twisted logs, whatever the factory's noisy says, for every
#: port a worker opens (a few per worker would bury make run's hints).
_STARTING = re.compile(r"[A-Za-z_.]+ starting on \S+")


def _log_plainly() -> None:
    """Log bare event text to stdout, for the parent to relay."""
    from twisted.logger import formatEvent, globalLogBeginner

    def write(event) -> None:
        text = formatEvent(event)
        if _STARTING.fullmatch(text):
            return  # tcp.Port's "X starting on N": worker 0 says it listens
        if event.get("log_failure") is not None:
            text += "\n" + event["log_failure"].getTraceback()
        sys.stdout.write(text + "\n")
        sys.stdout.flush()

    globalLogBeginner.beginLoggingTo([write], redirectStandardIO=False)


def worker_main(number: int) -> None:
    """Worker C{number}: take its settings from the environment, run its
    daemon until it is told to stop (SIGTERM) or its parent goes away."""
    import importlib

    from twisted.internet import reactor, stdio

    setup = json.loads(os.environ.pop(SETUP_VARIABLE))
    if os.getppid() != setup["parent"]:
        return  # the parent is already gone
    _log_plainly()
    module = importlib.import_module(setup["module"])
    options = module.Options()
    options.parseOptions(setup["args"])
    options.settings = replace(options.settings, **setup["dsns"])
    # Its number picks its own metrics port (marketplace.observability.monitor).
    options.worker_number = number
    top = module.makeService(options, reactor)
    servers = [child for child in top if isinstance(child, ApiServer)]

    class _Parent(protocol.Protocol):
        """Stdin, a pipe from the parent: it closes when the parent ends,
        however it ends."""

        def connectionLost(self, reason=None) -> None:  # noqa: N802 (Twisted name)
            exits.stop(reactor)

    stdio.StandardIO(_Parent(), stdin=0, stdout=os.dup(1))

    def stop_once(*_) -> None:
        # SIGTERM may come twice (to make's process group, and from
        # worker 0): the reactor's own handler would stop it twice.
        reactor.callFromThread(exits.stop, reactor)

    reactor.callWhenRunning(signal.signal, signal.SIGTERM, stop_once)
    top.startService()
    # Worker 0 reads this line to know that this worker serves.
    defer.gatherResults([s.listening() for s in servers], consumeErrors=True).addCallbacks(
        lambda _: Logger().info(SERVING), lambda _: None
    )
    reactor.addSystemEventTrigger("before", "shutdown", top.stopService)
    reactor.run()
    # A SIGTERM still on its way has nothing left to stop; ignored, as
    # Python's exit would otherwise restore the default (to be killed by it).
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    sys.exit(1 if exits.failed() else 0)
