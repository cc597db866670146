"""Listening on a port that other processes listen on too (SO_REUSEPORT),
so that the kernel spreads new connections over them: the endpoints of the
C{--workers} processes (marketplace.daemon.workers).

C{reuseport:alone:tcp:8080} is C{tcp:8080} shared this way after checking
that no other socket listens on the port; C{reuseport:shared:tcp:8080}
without the check.  twisted/plugins/marketplace_endpoints.py makes the
C{reuseport:} prefix known to C{serverFromString}.
"""

import socket
from typing import List

from twisted.internet import defer, error, tcp
from twisted.internet.endpoints import (
    SSL4ServerEndpoint,
    TCP4ServerEndpoint,
    TCP6ServerEndpoint,
    serverFromString,
)
from twisted.internet.interfaces import IStreamServerEndpoint, IStreamServerEndpointStringParser
from twisted.plugin import IPlugin
from zope.interface import implementer

from marketplace.frame.descriptions import quote
from marketplace.frame.limits import listen_descriptions


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

    def __init__(
        self, reactor, port: int, backlog: int, interface: str, tls=None, alone_first=False
    ) -> None:
        self._reactor = reactor
        self._port = port
        self._backlog = backlog
        self._interface = interface
        self._tls = tls
        self._alone_first = alone_first

    def listen(self, factory):
        def start():
            if self._alone_first:
                _check_free(self._interface, self._port)
            wrapped = factory
            if self._tls is not None:
                from twisted.protocols.tls import TLSMemoryBIOFactory

                wrapped = TLSMemoryBIOFactory(self._tls, False, factory)
            port = _ReusePort(self._port, wrapped, self._backlog, self._interface, self._reactor)
            port.startListening()
            return port

        return defer.execute(start)


def _check_free(interface: str, port: int) -> None:
    """Raise CannotListenError if another socket listens on the port.

    Sockets with SO_REUSEPORT of the same user may all bind one port, so
    without this check a second daemon would quietly share the first one's
    port; a socket without it cannot bind a port someone listens on.
    """
    family = socket.AF_INET6 if ":" in interface else socket.AF_INET
    probe = socket.socket(family, socket.SOCK_STREAM)
    try:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.bind((interface, port))
    except OSError as e:
        raise error.CannotListenError(interface, port, e)
    finally:
        probe.close()


def shared_endpoint(reactor, endpoint, alone_first: bool = False) -> IStreamServerEndpoint:
    """The SO_REUSEPORT twin of a TCP or SSL server endpoint; with
    C{alone_first}, it refuses a port that another socket listens on."""
    if isinstance(endpoint, (TCP4ServerEndpoint, TCP6ServerEndpoint)):
        return ReusePortEndpoint(
            reactor, endpoint._port, endpoint._backlog, endpoint._interface,
            alone_first=alone_first,
        )
    if isinstance(endpoint, SSL4ServerEndpoint):
        return ReusePortEndpoint(
            reactor, endpoint._port, endpoint._backlog, endpoint._interface,
            endpoint._sslContextFactory, alone_first,
        )
    raise ValueError(
        f"--workers needs tcp:, tcp6: or ssl: endpoints to share a port, not {endpoint!r}"
    )


#: The endpoint types whose ports the workers can share.
SHAREABLE = ("tcp", "tcp6", "ssl")


def shared_descriptions(descriptions, first: bool) -> List[str]:
    """The C{reuseport:} descriptions (L{ReusePortParser}) of C{tcp:},
    C{tcp6:} or C{ssl:} endpoint descriptions, so that every worker listens
    on the same ports; C{first} (worker 0) refuses a port that another
    socket listens on.  ValueError for another kind of endpoint."""
    shared = []
    for description in listen_descriptions(descriptions):
        kind = description.split(":", 1)[0]
        if kind not in SHAREABLE:
            raise ValueError(
                "--workers needs tcp:, tcp6: or ssl: endpoints to share a port,"
                f" not {description!r}"
            )
        alone = "alone" if first else "shared"
        shared.append(f"reuseport:{alone}:{description}")
    return shared


@implementer(IPlugin, IStreamServerEndpointStringParser)
class ReusePortParser:
    """The C{reuseport:} endpoint descriptions of the workers:
    C{reuseport:alone:tcp:8080} is C{tcp:8080} listening with SO_REUSEPORT
    after checking that no other socket listens on the port (worker 0),
    C{reuseport:shared:…} without the check (the other workers)."""

    prefix = "reuseport"

    def parseStreamServer(self, reactor, mode, *args, **kwargs):  # noqa: N802 (Twisted name)
        if mode not in ("alone", "shared"):
            raise ValueError(f"reuseport: takes alone: or shared:, not {mode!r}")
        inner = ":".join(
            [quote(a) for a in args]
            + [f"{quote(k)}={quote(v)}" for k, v in kwargs.items()]
        )
        return shared_endpoint(
            reactor, serverFromString(reactor, inner), alone_first=mode == "alone"
        )
