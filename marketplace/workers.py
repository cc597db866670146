"""Several processes serving one port: C{--workers N}.

The daemon that twistd starts is worker 0: it owns the databases (and the
embedded PostgreSQL, which is thus started once) and spawns N-1 more
processes of the same daemon once its databases are ready.  Every process
listens on the same ports with C{SO_REUSEPORT}, so the kernel spreads new
connections over them and each process has a core's worth of Python to
serve its share.  A worker stops when it gets SIGTERM or SIGINT (Ctrl-C
reaches the whole process group) or when the parent goes away (its stdin
closes); the parent stops its workers first, waits for them, and only then
closes its own databases and lets go of the embedded server.
"""

import json
import os
import signal
import socket
import sys
from dataclasses import replace
from typing import Callable, Dict, List, Optional

from twisted.application.service import IService, Service
from twisted.internet import defer, error, protocol, tcp
from twisted.internet.endpoints import (
    SSL4ServerEndpoint,
    TCP4ServerEndpoint,
    TCP6ServerEndpoint,
    serverFromString,
)
from twisted.internet.interfaces import IStreamServerEndpoint
from twisted.logger import Logger
from twisted.python import usage
from zope.interface import implementer

# Seconds a worker has to stop before it is killed.
STOP_TIMEOUT = 30.0


class _ReusePort(tcp.Port):
    """A TCP port that other processes may bind too (SO_REUSEPORT)."""

    def createInternetSocket(self):  # noqa: N802 (Twisted name)
        s = super().createInternetSocket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        return s


@implementer(IStreamServerEndpoint)
class ReusePortEndpoint:
    """The endpoint of a C{tcp:} or C{ssl:} description, listening with
    SO_REUSEPORT so that every worker can listen on the same port."""

    def __init__(self, reactor, port: int, backlog: int, interface: str, tls=None) -> None:
        self._reactor = reactor
        self._port = port
        self._backlog = backlog
        self._interface = interface
        self._tls = tls

    def listen(self, factory):
        def start():
            wrapped = factory
            if self._tls is not None:
                from twisted.protocols.tls import TLSMemoryBIOFactory

                wrapped = TLSMemoryBIOFactory(self._tls, False, factory)
            port = _ReusePort(self._port, wrapped, self._backlog, self._interface, self._reactor)
            port.startListening()
            return port

        return defer.execute(start)


def reuse_port_endpoint(reactor, description: str) -> IStreamServerEndpoint:
    """A SO_REUSEPORT endpoint for a server endpoint description; only
    C{tcp:}, C{tcp6:} and C{ssl:} descriptions can be shared this way."""
    return shared_endpoint(reactor, serverFromString(reactor, description))


def shared_endpoint(reactor, endpoint) -> IStreamServerEndpoint:
    """The SO_REUSEPORT twin of a TCP or SSL server endpoint."""
    if isinstance(endpoint, (TCP4ServerEndpoint, TCP6ServerEndpoint)):
        return ReusePortEndpoint(
            reactor, endpoint._port, endpoint._backlog, endpoint._interface
        )
    if isinstance(endpoint, SSL4ServerEndpoint):
        return ReusePortEndpoint(
            reactor, endpoint._port, endpoint._backlog, endpoint._interface,
            endpoint._sslContextFactory,
        )
    raise ValueError(
        f"--workers needs tcp:, tcp6: or ssl: endpoints to share a port, not {endpoint!r}"
    )


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


class WorkerOptions(usage.Options):
    """The C{--workers} option, mixed into a daemon's Options."""

    optParameters = [
        ["workers", None, "1",
         "Processes serving each service's ports (SO_REUSEPORT); use one per"
         " core. Needs tcp: or ssl: endpoints."],
    ]

    def postOptions(self) -> None:
        super().postOptions()
        try:
            self["workers"] = int(self["workers"])
        except ValueError:
            raise usage.UsageError("--workers must be a whole number")
        if self["workers"] < 1:
            raise usage.UsageError("--workers must be at least 1")


def with_workers(options, module: str, make: Callable, reactor=None) -> IService:
    """The daemon C{make(options, reactor)} of plugin C{module}, as one of
    C{options["workers"]} processes when that is more than one.

    In worker 0 (the one twistd starts) a L{WorkerPool} starts the others;
    in every worker the listeners share their ports.
    """
    count = options.get("workers", 1)
    is_child = getattr(options, "worker", False)
    top = make(options, reactor)
    if count == 1 and not is_child:
        return top
    if reactor is None:
        from twisted.internet import reactor
    from marketplace.service import ApiServer, Backend

    backend = None
    for child in top:
        if isinstance(child, ApiServer):
            try:
                child.endpoint = shared_endpoint(reactor, child.endpoint)
            except ValueError as e:
                raise usage.UsageError(str(e))
        elif isinstance(child, Backend):
            backend = child
    if not is_child:
        WorkerPool(count, module, option_args(options), backend, reactor).setServiceParent(top)
    return top


class _Worker(protocol.ProcessProtocol):
    """One worker process as its parent sees it: its log lines are relayed,
    and L{ended} fires when it exits."""

    log = Logger()

    def __init__(self, number: int, pool: "WorkerPool") -> None:
        self.number = number
        self.pool = pool
        self.ended: defer.Deferred = defer.Deferred()
        self._partial = b""

    def outReceived(self, data: bytes) -> None:  # noqa: N802 (Twisted name)
        lines = (self._partial + data).split(b"\n")
        self._partial = lines.pop()
        for line in lines:
            self.log.info(
                "worker {number}: {line}",
                number=self.number,
                line=line.decode("utf-8", "replace"),
            )

    errReceived = outReceived

    def processEnded(self, reason) -> None:  # noqa: N802 (Twisted name)
        if not reason.check(error.ProcessDone) and self.pool.running:
            self.log.warn(
                "worker {number} exited ({reason}); stopping the daemon",
                number=self.number,
                reason=reason.getErrorMessage(),
            )
            self.pool.worker_died()
        self.ended.callback(None)


class WorkerPool(Service):
    """Spawns C{count - 1} more worker processes of a daemon once its
    backend is ready, and stops them before the rest of the daemon."""

    log = Logger()

    def __init__(self, count: int, module: str, args: List[str], backend, reactor) -> None:
        self.count = count
        self.module = module
        self.args = args
        self.backend = backend
        self.reactor = reactor
        self.workers: List[_Worker] = []
        self._transports: Dict[int, object] = {}

    def startService(self):
        super().startService()
        d = self.backend.ready()
        d.addCallback(lambda _: self._spawn())
        d.addErrback(lambda f: None)  # the backend has said why and stops the daemon

    def _dsns(self) -> Dict[str, Optional[str]]:
        backend = self.backend
        return {
            "customer_db": backend.customer.dsn,
            "product_db": backend.product.dsn,
            "payments_db": backend.payments.dsn,
        }

    def _spawn(self) -> None:
        if not self.running:
            return
        setup = {"module": self.module, "args": self.args, "dsns": self._dsns()}
        for number in range(1, self.count):
            worker = _Worker(number, self)
            # The settings go through stdin, not the command line, as a
            # connection string may hold a password; stdin stays open so
            # the worker notices when its parent is gone.
            transport = self.reactor.spawnProcess(
                worker,
                sys.executable,
                [sys.executable, "-m", "marketplace.workers"],
                env=dict(os.environ),
                childFDs={0: "w", 1: "r", 2: "r"},
            )
            # Its number picks its own metrics port (marketplace.monitor).
            transport.write(json.dumps({**setup, "number": number}).encode("utf-8") + b"\n")
            self.workers.append(worker)
            self._transports[number] = transport
        self.log.info("started {n} more worker processes", n=self.count - 1)

    def worker_died(self) -> None:
        from marketplace.service import stop_reactor

        stop_reactor(self.reactor)

    def stopService(self):
        super().stopService()
        return defer.Deferred.fromCoroutine(self._stop())

    async def _stop(self) -> None:
        waiting = [w.ended for w in self.workers if not w.ended.called]
        for worker in self.workers:
            transport = self._transports[worker.number]
            if not worker.ended.called:
                try:
                    transport.signalProcess("TERM")
                except error.ProcessExitedAlready:
                    pass
        if not waiting:
            return
        timeout = self.reactor.callLater(STOP_TIMEOUT, self._kill)
        await defer.DeferredList(waiting)
        if timeout.active():
            timeout.cancel()

    def _kill(self) -> None:
        for worker in self.workers:
            if not worker.ended.called:
                self.log.warn("worker {number} did not stop; killing it", number=worker.number)
                try:
                    self._transports[worker.number].signalProcess("KILL")
                except error.ProcessExitedAlready:
                    pass


def _log_plainly() -> None:
    """Log bare event text to stdout, for the parent to relay."""
    from twisted.logger import formatEvent, globalLogBeginner

    def write(event) -> None:
        text = formatEvent(event)
        if event.get("log_failure") is not None:
            text += "\n" + event["log_failure"].getTraceback()
        sys.stdout.write(text + "\n")
        sys.stdout.flush()

    globalLogBeginner.beginLoggingTo([write], redirectStandardIO=False)


def worker_main() -> None:
    """A worker process: read its settings from stdin, run its daemon
    until it is told to stop or its parent goes away."""
    import importlib

    from twisted.internet import reactor, stdio

    setup = json.loads(sys.stdin.readline())
    _log_plainly()
    module = importlib.import_module(setup["module"])
    options = module.Options()
    options.parseOptions(setup["args"])
    options.settings = replace(options.settings, **setup["dsns"])
    options.worker = True
    options.worker_number = setup.get("number", 0)
    top = module.makeService(options, reactor)

    class _Parent(protocol.Protocol):
        def connectionLost(self, reason=None) -> None:  # noqa: N802 (Twisted name)
            if reactor.running:
                reactor.stop()

    stdio.StandardIO(_Parent(), stdin=0, stdout=os.dup(1))
    top.startService()
    reactor.addSystemEventTrigger("before", "shutdown", top.stopService)
    reactor.run()


if __name__ == "__main__":
    signal.signal(signal.SIGINT, signal.default_int_handler)
    worker_main()
