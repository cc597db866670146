"""A TCP proxy for the tests that drops connections at chosen moments.

L{FaultProxy} listens on a loopback port and joins every connection it
accepts to a target (a service's port, or PostgreSQL's socket).  It reads
the bytes of each direction ("up": client to target, "down": target to
client) as whole messages of the protocol spoken there, and passes each
message on unchanged, once it has all of it:

- L{Int32Frames}: the marketplace's framing (PROTOCOL.md, a 4-byte
  big-endian length, then the body), both ways.
- L{PostgresMessages}: PostgreSQL's wire protocol: a type byte and a
  4-byte length that counts itself, after the untyped startup message
  (and the one-byte answers to SSL and GSS encryption requests).

A fault is a rule, armed with L{FaultProxy.arm}: every message is shown to
the armed rules, and the first rule that wants to cut gets one cut, after
which it is disarmed and everything passes again (so a retry succeeds).
A cut passes on the first bytes of the message that the rule names (none,
or part of it), then closes both sides of that connection.

- L{FrameCut}: at the next message in one direction, after C{at} of its
  bytes.  For the client's side of a service: C{FrameCut(UP, HALF)} before
  the request is complete; C{FrameCut(DOWN, 0)} after the service has
  received and done the whole request, before any byte of its answer goes
  back; C{FrameCut(DOWN, HALF)} half-way through the answer.
- L{QueryCut}: PostgreSQL has carried out (and, outside a transaction
  block, committed) a chosen Query message, and its answer never reaches
  the service: from that query on, every message PostgreSQL sends on that
  connection is held back, and when its ReadyForQuery arrives (the
  statement is done: COMMIT included) the connection is closed without
  passing any of them on.  The query is the C{occurrence}-th Query message
  after arming whose text C{match}es; L{sql_shape} compares statements
  apart from their literal values.  Only the simple query protocol
  (psycopg2's) is looked at.
"""

import re
import struct
from typing import Callable, List, Optional, Union

from twisted.internet import defer, protocol
from psycopg2.extensions import make_dsn, parse_dsn
from twisted.internet.endpoints import TCP4ClientEndpoint, UNIXClientEndpoint, connectProtocol
from twisted.internet.interfaces import IStreamClientEndpoint

UP = "up"
DOWN = "down"
#: Cut after half of the message's bytes (its length prefix included).
HALF = "half"

#: What a rule answers for a message: pass it on, or hold it back (a cut
#: follows); an int: pass on that many of its bytes, then cut.
PASS = "pass"
HOLD = "hold"

_LENGTH = struct.Struct(">I")


class Int32Frames:
    """Splits the marketplace's framing into frames, both directions."""

    def __init__(self) -> None:
        self._buffers = {UP: b"", DOWN: b""}

    def split(self, direction: str, data: bytes) -> List[bytes]:
        """The whole frames (prefix included) that C{data} completes."""
        buffer = self._buffers[direction] + data
        frames = []
        while len(buffer) >= 4:
            end = 4 + _LENGTH.unpack_from(buffer)[0]
            if len(buffer) < end:
                break
            frames.append(buffer[:end])
            buffer = buffer[end:]
        self._buffers[direction] = buffer
        return frames


#: Startup message codes after which the client sends another untyped
#: message (the server answers them with one byte).
_SSL_REQUEST = 80877103
_GSSENC_REQUEST = 80877104


class PostgresMessages:
    """Splits PostgreSQL's wire protocol into messages, both directions."""

    def __init__(self) -> None:
        self._buffers = {UP: b"", DOWN: b""}
        self._startup = True
        # One-byte answers the server owes to SSL/GSS requests.
        self._single_bytes = 0

    def split(self, direction: str, data: bytes) -> List[bytes]:
        """The whole messages (type byte and length included) that C{data}
        completes."""
        buffer = self._buffers[direction] + data
        messages = []
        while buffer:
            if direction == DOWN and self._single_bytes:
                self._single_bytes -= 1
                end = 1
            elif direction == UP and self._startup:
                if len(buffer) < 8:
                    break
                end = _LENGTH.unpack_from(buffer)[0]
                if len(buffer) >= end:
                    code = _LENGTH.unpack_from(buffer, 4)[0]
                    if code in (_SSL_REQUEST, _GSSENC_REQUEST):
                        self._single_bytes += 1
                    else:
                        self._startup = False
            else:
                if len(buffer) < 5:
                    break
                end = 1 + _LENGTH.unpack_from(buffer, 1)[0]
            if len(buffer) < end:
                break
            messages.append(buffer[:end])
            buffer = buffer[end:]
        self._buffers[direction] = buffer
        return messages


def query_text(message: bytes) -> Optional[str]:
    """The SQL of a PostgreSQL Query message, None for other messages."""
    if message[:1] != b"Q":
        return None
    return message[5:].rstrip(b"\0").decode("utf-8", errors="replace")


_LITERALS = re.compile(r"[EeBbXx]?'(?:[^']|'')*'|\b\d+(?:\.\d+)?\b")


def sql_shape(sql: str) -> str:
    """C{sql} with every literal (string, number) replaced by C{?} and
    white space collapsed: the same statement with other values has the
    same shape."""
    return " ".join(_LITERALS.sub("?", sql).split())


class FrameCut:
    """Cut at the next message in C{direction}: pass C{at} of its bytes
    (an int, or L{HALF}), then close both sides."""

    def __init__(self, direction: str, at: Union[int, str] = 0) -> None:
        self.direction = direction
        self.at = at

    def __repr__(self) -> str:
        return f"FrameCut({self.direction!r}, {self.at!r})"

    def decide(self, link: "_Link", direction: str, message: bytes):
        if direction != self.direction:
            return PASS
        at = len(message) // 2 if self.at == HALF else self.at
        return min(at, len(message))


class QueryCut:
    """Cut the answer to the C{occurrence}-th Query message whose SQL
    C{match}es: PostgreSQL carries it out, and the connection is closed
    when its ReadyForQuery arrives, none of the answer passed on."""

    def __init__(
        self, match: Callable[[str], bool], occurrence: int = 1, name: str = ""
    ) -> None:
        self.match = match
        self.occurrence = self.left = occurrence
        self.name = name or repr(match)
        self._link: Optional[_Link] = None

    def __repr__(self) -> str:
        return f"QueryCut({self.name}, occurrence {self.occurrence})"

    @classmethod
    def shaped_like(cls, sql: str, occurrence: int = 1) -> "QueryCut":
        """A cut at the C{occurrence}-th statement of the shape of C{sql}."""
        shape = sql_shape(sql)
        name = repr(shape if len(shape) < 60 else shape[:57] + "...")
        return cls(lambda text: sql_shape(text) == shape, occurrence, name)

    def decide(self, link: "_Link", direction: str, message: bytes):
        if self._link is None:
            if direction == UP:
                sql = query_text(message)
                if sql is not None and self.match(sql):
                    self.left -= 1
                    if self.left == 0:
                        self._link = link
            return PASS
        if link is not self._link or direction != DOWN:
            return PASS
        return 0 if message[:1] == b"Z" else HOLD


class _Side(protocol.Protocol):
    """One end of a proxied connection, reporting to its L{_Link}."""

    def __init__(self, link: "_Link", direction: str) -> None:
        self.link = link
        # The direction of the bytes this side receives.
        self.direction = direction
        self.gone: defer.Deferred = defer.Deferred()

    def dataReceived(self, data: bytes) -> None:  # noqa: N802 (Twisted name)
        self.link.received(self.direction, data)

    def connectionLost(self, reason=None) -> None:  # noqa: N802 (Twisted name)
        self.gone.callback(None)
        self.link.lost(self)


class _Front(_Side):
    """The client's side: reads nothing until the target is reached."""

    def __init__(self, link: "_Link") -> None:
        super().__init__(link, UP)

    def connectionMade(self) -> None:  # noqa: N802 (Twisted name)
        if self.link.cut:
            self.transport.loseConnection()
        elif self.link.back is None:
            self.transport.pauseProducing()


class _Link:
    """A client's connection and the proxy's connection to the target."""

    def __init__(self, proxy: "FaultProxy") -> None:
        self.proxy = proxy
        self.framing = proxy.framing()
        self.front = _Front(self)
        self.back: Optional[_Side] = None
        self.held: dict = {UP: [], DOWN: []}
        self.cut = False

    def joined(self, back: _Side) -> None:
        self.back = back
        if self.cut:
            back.transport.loseConnection()
        else:
            self.front.transport.resumeProducing()

    def received(self, direction: str, data: bytes) -> None:
        if self.cut:
            return
        for message in self.framing.split(direction, data):
            verdict = self.proxy.decide(self, direction, message)
            if verdict == HOLD:
                self.held[direction].append(message)
                continue
            if self.held[direction]:
                # Messages held for a rule that then let them be.
                message = b"".join(self.held[direction]) + message
                self.held[direction] = []
            to = self.back if direction == UP else self.front
            if verdict == PASS:
                to.transport.write(message)
            else:
                to.transport.write(message[:verdict])
                self.close()
                return

    def close(self) -> None:
        """Close both sides (what was written to them is sent first)."""
        self.cut = True
        for side in (self.front, self.back):
            if side is not None and side.transport is not None:
                side.transport.loseConnection()

    def lost(self, side: _Side) -> None:
        self.close()

    def gone(self) -> defer.Deferred:
        """Fires once both sides are closed."""
        sides = [s for s in (self.front, self.back) if s is not None and s.transport]
        return defer.gatherResults([s.gone for s in sides])


class _Accept(protocol.Factory):
    def __init__(self, proxy: "FaultProxy") -> None:
        self.proxy = proxy

    def buildProtocol(self, addr):  # noqa: N802 (Twisted name)
        return self.proxy.accepted()


class FaultProxy:
    """A proxy to C{target} (an L{IStreamClientEndpoint}) whose connections
    are cut by the rules armed on it.

    C{framing} makes the per-connection message splitter (L{Int32Frames}
    or L{PostgresMessages}).  L{fired} lists the rules that have cut, in
    order; L{queries} the SQL of every PostgreSQL Query message passed up.
    """

    def __init__(
        self, reactor, target: IStreamClientEndpoint, framing=Int32Frames
    ) -> None:
        self.reactor = reactor
        self.target = target
        self.framing = framing
        self.armed: List = []
        self.fired: List = []
        self.queries: List[str] = []
        self.links: List[_Link] = []
        self.port = None

    def listen(self) -> int:
        """Listen on a loopback port of the system's choosing; that port."""
        self.port = self.reactor.listenTCP(0, _Accept(self), interface="127.0.0.1")
        return self.port.getHost().port

    async def stop(self) -> None:
        """Stop listening and close every connection."""
        await self.port.stopListening()
        for link in self.links:
            link.close()
        await defer.gatherResults([link.gone() for link in self.links])

    def arm(self, rule) -> None:
        """Let C{rule} cut once."""
        self.armed.append(rule)

    def disarm(self) -> None:
        """Take back every rule that has not cut."""
        self.armed = []

    def accepted(self) -> _Side:
        link = _Link(self)
        self.links.append(link)
        connectProtocol(self.target, _Side(link, DOWN)).addCallbacks(
            link.joined, lambda _: link.close()
        )
        return link.front

    def decide(self, link: _Link, direction: str, message: bytes):
        if direction == UP:
            sql = query_text(message) if self.framing is PostgresMessages else None
            if sql is not None:
                self.queries.append(sql)
        verdict = PASS
        for rule in list(self.armed):
            answer = rule.decide(link, direction, message)
            if answer == HOLD:
                verdict = HOLD
            elif answer != PASS:
                self.armed.remove(rule)
                self.fired.append(rule)
                return answer
        return verdict


async def start_proxy(testcase, reactor, target, framing=Int32Frames) -> FaultProxy:
    """A listening L{FaultProxy} to C{target}, stopped when the test ends."""
    proxy = FaultProxy(reactor, target, framing)
    proxy.listen()
    testcase.addCleanup(lambda: defer.Deferred.fromCoroutine(proxy.stop()))
    return proxy


def service_target(reactor, port: int) -> IStreamClientEndpoint:
    """The endpoint of a service on a loopback port."""
    return TCP4ClientEndpoint(reactor, "127.0.0.1", port)


def postgres_target(reactor, dsn: str) -> IStreamClientEndpoint:
    """The endpoint of the PostgreSQL server of C{dsn} (a UNIX socket, as
    the embedded server has, or TCP)."""
    params = parse_dsn(dsn)
    host = params.get("host", "")
    port = int(params.get("port", 5432))
    if host.startswith("/"):
        return UNIXClientEndpoint(reactor, f"{host}/.s.PGSQL.{port}")
    return TCP4ClientEndpoint(reactor, host or "localhost", port)


def proxied_dsn(dsn: str, proxy: FaultProxy) -> str:
    """C{dsn} with its server replaced by C{proxy} (plain TCP: no SSL or
    GSS encryption, whose bytes the proxy could not read)."""
    return make_dsn(
        dsn,
        host="127.0.0.1",
        port=proxy.port.getHost().port,
        sslmode="disable",
        gssencmode="disable",
    )


__all__ = [
    "DOWN",
    "HALF",
    "UP",
    "FaultProxy",
    "FrameCut",
    "Int32Frames",
    "PostgresMessages",
    "QueryCut",
    "postgres_target",
    "proxied_dsn",
    "query_text",
    "service_target",
    "sql_shape",
    "start_proxy",
]
