"""The one line a daemon logs once it serves: which service listens where,
the terminal program to run next, and (with C{--metrics}) the
C{marketplace-top} command that watches it.

C{make run} starts several worker processes, each with a few start-up
lines; this line comes after all of them (L{ReadyNotice} waits for the
listeners, the metrics server and every worker), so it is the last thing
on the screen while the daemon serves.  L{ready_line} makes the text and
needs no network.
"""

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Sequence

from twisted.application.service import Service
from twisted.internet import defer
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.logger import Logger

#: The terminal program of each service a person uses, and the host and
#: port it goes to without arguments (clients/program.py).
PROGRAMS = {
    "seller": ("marketplace-seller-cli", 8080),
    "buyer": ("marketplace-buyer-cli", 8081),
}

#: The order services are named in.
ORDER = ("seller", "buyer", "payments")

_WILDCARDS = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}
_LOOPBACK = {"127.0.0.1", "localhost", "::1"}


@dataclass(frozen=True)
class Listening:
    """A service and the address one of its listeners has."""

    service: str
    address: object


def _is_tcp(address) -> bool:
    return isinstance(address, (IPv4Address, IPv6Address))


def _path(address) -> str:
    """A socket's path (Twisted keeps it as bytes)."""
    name = getattr(address, "name", address)
    return name.decode(errors="replace") if isinstance(name, bytes) else str(name)


def _where(address) -> str:
    """A listener's address in few words: its port on loopback or every
    interface, host:port elsewhere, a socket's path."""
    if _is_tcp(address):
        if address.host in _LOOPBACK or address.host in _WILDCARDS:
            return str(address.port)
        return f"{address.host}:{address.port}"
    return _path(address)


def _client_args(address, default_port: int) -> str:
    """The arguments a terminal program needs to reach C{address}: none at
    localhost's default port."""
    if not _is_tcp(address):
        return f" --connect unix:path={_path(address)}"
    host = _WILDCARDS.get(address.host, address.host)
    if host in _LOOPBACK and address.port == default_port:
        return ""
    return f" {'localhost' if host in _LOOPBACK else host} {address.port}"


def program_path(name: str, bin_dir: Optional[Path] = None, cwd: Optional[Path] = None) -> str:
    """How to type the installed program C{name} from C{cwd}: its path in
    this environment's bin folder, relative when it is below C{cwd}
    (C{.venv/bin/...} under C{make run}); the bare name if it is not there."""
    bin_dir = Path(sys.executable).parent if bin_dir is None else bin_dir
    cwd = Path.cwd() if cwd is None else cwd
    path = bin_dir / name
    if not path.exists():
        return name
    try:
        return str(path.relative_to(cwd))
    except ValueError:
        return str(path)


def watch_target(address, workers: int, same_ports: bool) -> str:
    """The C{marketplace-top} argument for the metrics of C{workers}
    processes whose first listens on C{address}: C{HOST:FIRST-LAST}; only
    the first's port when the others' cannot be known (C{same_ports} false:
    a port 0 description gives each worker a port of its own choosing)."""
    host = _WILDCARDS.get(address.host, address.host)
    if ":" in host:
        host = f"[{host}]"
    if workers > 1 and same_ports:
        return f"{host}:{address.port}-{address.port + workers - 1}"
    return f"{host}:{address.port}"


def ready_line(
    listening: Sequence[Listening],
    watch: Optional[str] = None,
    program=program_path,
) -> str:
    """The ready line: the services of C{listening} (seller, buyer,
    payments, then any other; each once, with each of its addresses), the
    terminal programs of the seller and buyer services served, and C{watch}
    (a C{marketplace-top} argument) if there is one."""
    by_service: dict = {}
    ranked = sorted(
        listening, key=lambda one: ORDER.index(one.service) if one.service in ORDER else len(ORDER)
    )
    for one in ranked:
        by_service.setdefault(one.service, []).append(one.address)
    served = ", ".join(
        f"{name} {' and '.join(_where(a) for a in addresses)}"
        for name, addresses in by_service.items()
    )
    parts = [f"ready: {served}"]
    clients = [
        program(PROGRAMS[name][0]) + _client_args(addresses[0], PROGRAMS[name][1])
        for name, addresses in by_service.items()
        if name in PROGRAMS
    ]
    if clients:
        parts.append("in another terminal run " + " or ".join(clients))
    if watch is not None:
        parts.append(f"watch: {program('marketplace-top')} {watch}")
    return "; ".join(parts)


class ReadyNotice(Service):
    """Logs L{ready_line} once, when every one of C{servers} (L{ApiServer}s)
    listens, the C{monitor} (a L{MonitorServer}, or None) too, and the
    Deferred C{workers_serving} (None: no other process) has fired."""

    log = Logger()
    name = "ready notice"

    def __init__(
        self,
        servers: List,
        monitor=None,
        workers: int = 1,
        same_metrics_ports: bool = True,
        workers_serving: Optional[defer.Deferred] = None,
    ) -> None:
        self.servers = servers
        self.monitor = monitor
        self.workers = workers
        self.same_metrics_ports = same_metrics_ports
        self.workers_serving = workers_serving

    def startService(self):
        super().startService()
        waits = [server.listening() for server in self.servers]
        if self.monitor is not None:
            waits.append(self.monitor.listening())
        if self.workers_serving is not None:
            waits.append(self.workers_serving)
        # A daemon that cannot serve says why elsewhere, and stops.
        defer.gatherResults(waits, consumeErrors=True).addCallbacks(self._ready, lambda _: None)

    def _ready(self, _) -> None:
        if not self.running:
            return
        listening = [
            Listening(server.service, server.port.getHost())
            for server in self.servers
            if server.port is not None
        ]
        watch = None
        if self.monitor is not None and self.monitor.port is not None:
            address = self.monitor.port.getHost()
            if _is_tcp(address):
                watch = watch_target(address, self.workers, self.same_metrics_ports)
        self.log.info("{line}", line=ready_line(listening, watch))


__all__ = ["Listening", "ReadyNotice", "program_path", "ready_line", "watch_target"]
