"""The framed server protocol shared by every marketplace service.

A frame is a 4-byte big-endian length and that many bytes of UTF-8 JSON
(L{Int32StringReceiver}).  Requests on one connection may be pipelined; the
answers are written in the order the requests arrived, however long each one
takes.  What a frame means is the dispatcher's business, not this module's.

Memory per connection is bounded: the protocol is its transport's streaming
producer, so when the answers not yet sent pass the bound (C{max_unsent} of
limits.py, the transport's C{bufferSize}) the transport pauses it, and it
reads and starts nothing more from that connection until they drain.
"""

import ipaddress
import struct
from collections import OrderedDict, deque
from typing import Callable, Optional

from twisted.internet import defer, tcp
from twisted.internet.protocol import Factory
from twisted.logger import Logger
from twisted.protocols.basic import Int32StringReceiver

from marketplace.contract.errors import FRAME_TOO_LARGE, RATE_LIMITED
from marketplace.frame import dispatch
from marketplace.frame.deferreds import when_fired
from marketplace.frame.limits import Limits

DEFAULT_MAX_FRAME = 1024 * 1024


# Writing a frame to a TCP connection without waiting for the reactor (the
# services' answers here, the client library's requests too).
#
# C{transport.write} queues the bytes and asks the reactor to say when the
# socket can take them: two epoll changes and a wait of one reactor turn for
# every answer, while the socket almost always has room at once.  For a
# plain TCP connection with nothing queued, L{write_now} hands the bytes to
# the socket straight away and queues only what it did not take.  Any other
# transport (TLS, or a test's) gets an ordinary C{write}.
#
# What the socket does not take goes through C{transport.write}, so the
# transport counts it against its C{bufferSize} and pauses its streaming
# producer when that is passed, exactly as if all of it had been written
# there; bytes the socket took at once are the kernel's, never buffered here.

_PLAIN = (tcp.Server, tcp.Client)
_PREFIX = struct.Struct(Int32StringReceiver.structFormat)


def framed(body: bytes) -> bytes:
    """A frame: C{body} after its length, as L{Int32StringReceiver} reads it."""
    return _PREFIX.pack(len(body)) + body


def write_now(transport, data: bytes) -> None:
    """Write C{data} to C{transport}, to its socket now where it can."""
    if (
        type(transport) not in _PLAIN
        or not transport.connected
        or transport.disconnecting
        or transport._writeDisconnected
        or (transport.producer is not None and not transport.streamingProducer)
        or transport._tempDataLen
        or len(transport.dataBuffer) > transport.offset
    ):
        transport.write(data)
        return
    sent = transport.writeSomeData(data)
    if isinstance(sent, Exception) or sent < 0:
        # The connection is gone; the reactor will notice and close it.
        return
    if sent < len(data):
        transport.write(data[sent:])


def limit_unsent(transport, size: int) -> None:
    """Let C{transport} hold at most about C{size} unsent bytes before it
    pauses its producer: the C{bufferSize} of the connection's file
    descriptor, under a TLS layer if there is one."""
    while transport is not None:
        if hasattr(transport, "bufferSize"):
            transport.bufferSize = size
            return
        transport = getattr(transport, "transport", None)

#: Seconds between two lines about connections refused or closed at the cap.
CROWDED_LOG_EVERY = 10.0

FrameHandler = Callable[[bytes], "defer.Deferred[bytes]"]


def source_of(address) -> str:
    """The source a connection's limits are counted by: its IPv4 address,
    the /64 network of an IPv6 one (one host's usual share), or "local"."""
    host = getattr(address, "host", None)
    if not isinstance(host, str):
        return "local"
    try:
        ip = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return host
    if ip.version == 6:
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.ip_network(f"{ip}/64", strict=False))
    return str(ip)


class _Slot:
    """An answer that may not be ready yet, in its place in the queue."""

    __slots__ = ("data", "ready")

    def __init__(self) -> None:
        self.data = b""
        self.ready = False


class FrameProtocol(Int32StringReceiver):
    """Turn frames into calls of the factory's handler, answers into frames."""

    log = Logger()

    def connectionMade(self) -> None:
        self.MAX_LENGTH = self.factory.max_frame
        self._answers: deque = deque()
        self._closing = False
        # The frame timeout (see limits.py): the timer that closes a
        # connection stuck half-way through a frame, and how many frames had
        # arrived when it was set.
        self._stall = None
        self._frames = 0
        self._stall_frames = 0
        # Whether the transport has paused us (too many bytes unsent), and
        # whether we are its producer.
        self._unsent_full = False
        self._producing = False
        self.source = source_of(self.transport.getPeer())
        # The idle timeout (see limits.py): frames counted at the last look,
        # and since when none came.
        self._idle_frames = 0
        self._idle_since = 0.0
        if not self.factory.connection_made(self):
            self._closing = True
            message = "the service has too many connections; try again later"
            answer = dispatch.encode(dispatch.error(None, RATE_LIMITED, message))
            self.transport.write(framed(answer))
            self.transport.loseConnection()
            return
        if self.factory.limits is not None:
            limit_unsent(self.transport, self.factory.limits.max_unsent)
        self.transport.registerProducer(self, True)
        self._producing = True

    @property
    def idle(self) -> bool:
        """Whether nothing is under way: no answer pending, no frame begun."""
        return not self._answers and not self._unprocessed and not self._closing

    def close_idle(self) -> None:
        """Close this idle connection (to make room, or after the timeout)."""
        self._stop_stall_timer()
        self.close()

    def connectionLost(self, reason=None) -> None:
        self._closing = True
        self._producing = False
        self._stop_stall_timer()
        self.factory.connection_lost(self)

    def dataReceived(self, data: bytes) -> None:
        if not self._closing:
            self.factory.touch(self)
            super().dataReceived(data)
            self._watch_for_stall()

    def _watch_for_stall(self) -> None:
        """Time the frame being received: from its first byte, or from the
        last whole frame, it must be complete within the frame timeout."""
        limits = self.factory.limits
        if limits is None or self._closing:
            return
        if self._unprocessed and not self.paused:
            if self._stall is None or self._frames != self._stall_frames:
                self._stop_stall_timer()
                self._stall_frames = self._frames
                self._stall = limits.call_later(limits.frame_timeout, self._stalled)
        else:
            # Nothing half-received, or paused by us: not the client's fault.
            self._stop_stall_timer()

    def _stop_stall_timer(self) -> None:
        if self._stall is not None:
            if self._stall.active():
                self._stall.cancel()
            self._stall = None

    def _stalled(self) -> None:
        self._stall = None
        self.log.info(
            "closing the connection from {peer}: half a frame for {timeout} s",
            peer=self.transport.getPeer(),
            timeout=self.factory.limits.frame_timeout,
        )
        self._closing = True
        self.transport.abortConnection()

    def stringReceived(self, frame: bytes) -> None:
        slot = _Slot()
        self._answers.append(slot)
        d = self.factory.track(self.factory.handle_frame(frame, self.source))
        d.addCallback(self._answer_ready, slot)
        d.addErrback(self._handler_failed, slot)
        self._frames += 1
        limits = self.factory.limits
        if limits is not None and len(self._answers) >= limits.max_in_flight:
            # Read no more of this connection until answers drain: the
            # client's pipelining is slowed down, not refused.
            self._update_reading()

    def lengthLimitExceeded(self, length: int) -> None:
        self.log.info(
            "frame of {length} bytes over the limit of {limit} from {peer}",
            length=length,
            limit=self.MAX_LENGTH,
            peer=self.transport.getPeer(),
        )
        slot = _Slot()
        self._answers.append(slot)
        self._closing = True
        message = f"the frame of {length} bytes is over the limit of {self.MAX_LENGTH}"
        self._answer_ready(
            dispatch.encode(dispatch.error(None, FRAME_TOO_LARGE, message)), slot
        )

    def _handler_failed(self, failure, slot: _Slot) -> None:
        # The dispatcher turns every error into an answer; reaching this
        # means a bug in it, so the connection can no longer be trusted.
        self.log.failure("frame handler failed", failure)
        self.transport.abortConnection()

    def _answer_ready(self, data: bytes, slot: _Slot) -> None:
        slot.data = data
        slot.ready = True
        answers = self._answers
        frames = []
        while answers and answers[0].ready:
            frames.append(framed(answers.popleft().data))
        if frames:
            write_now(self.transport, b"".join(frames))
        if self._closing and not answers:
            self.close()
        elif self.paused:
            self._update_reading()

    def close(self) -> None:
        """Close the connection once the answers handed over are sent."""
        # A transport with a producer waits for it before closing (TLS even
        # forever), so stop being one first.
        self._closing = True
        if self._producing:
            self._producing = False
            self.transport.unregisterProducer()
        self.transport.loseConnection()

    def _update_reading(self) -> None:
        """Read this connection, or stop reading it, as the limits say: not
        while too many of its answers are unsent (the transport has paused
        us) or being worked on (C{max_in_flight})."""
        if self._closing or self.transport.disconnecting:
            return
        limits = self.factory.limits
        hold = self._unsent_full or (
            limits is not None and len(self._answers) >= limits.max_in_flight
        )
        if hold and not self.paused:
            self.paused = True
            self.transport.pauseProducing()
        elif not hold and self.paused:
            self.paused = False
            self.transport.resumeProducing()
            # Frames that arrived before the pause, waiting whole.
            self.dataReceived(b"")

    # IPushProducer: the transport calls these as its unsent bytes pass the
    # bound and drain again.
    def pauseProducing(self) -> None:
        self._unsent_full = True
        self._update_reading()

    def resumeProducing(self) -> None:
        self._unsent_full = False
        if self.transport.disconnecting:
            # Closed from elsewhere while paused: let the transport finish.
            self.close()
            return
        self._update_reading()

    def stopProducing(self) -> None:
        # The connection is going; connectionLost follows.
        self._closing = True
        self._producing = False


class FrameFactory(Factory):
    """Builds L{FrameProtocol}s around one frame handler.

    It keeps its service's open connections within the limits (see
    limits.py) and the answers still being worked on, so a stopping
    service can wait for them.
    """

    protocol = FrameProtocol
    log = Logger()
    noisy = False

    def __init__(
        self,
        handle_frame: FrameHandler,
        max_frame: int = DEFAULT_MAX_FRAME,
        limits: Optional[Limits] = None,
    ) -> None:
        self.handle_frame = handle_frame
        self.max_frame = max_frame
        #: The daemon's L{Limits}, shared with its other factories; None
        #: for no limits.
        self.limits = limits
        #: Open connections, the one that sent something the longest ago
        #: first.
        self.connections: OrderedDict = OrderedDict()
        #: Open connections that have sent nothing yet, oldest first.
        self._silent: OrderedDict = OrderedDict()
        self._in_flight: set = set()
        self._idle_sweep = None
        #: Whether a port listens with this factory: idle connections are
        #: swept only then (a stopping service drains and closes its own).
        self._listening = False
        #: Connections closed to make room, and refused, since the last
        #: line about it.
        self._gave_way = 0
        self._refused = 0
        self._told_at: Optional[float] = None

    def connection_made(self, protocol: FrameProtocol) -> bool:
        """Count a new connection in; False if it must be refused."""
        limits = self.limits
        if limits is not None:
            if len(self.connections) >= limits.max_connections and not self._make_room():
                self._refused += 1
                limits.refused += 1
                self._tell_crowded()
                return False
            protocol._idle_since = limits.seconds()
            if limits.idle_timeout and self._idle_sweep is None and self._listening:
                self._idle_sweep = limits.call_later(self._sweep_every(), self._sweep_idle)
        self.connections[protocol] = None
        self._silent[protocol] = None
        return True

    def touch(self, protocol: FrameProtocol) -> None:
        """C{protocol} received data: it is the most recently active."""
        if protocol in self.connections:
            self.connections.move_to_end(protocol)
            self._silent.pop(protocol, None)

    def _make_room(self) -> bool:
        """Close the idle connection that matters least; whether there was one."""
        for group in (self._silent, self.connections):
            for protocol in group:
                if protocol.idle:
                    self._forget(protocol)
                    protocol.close_idle()
                    self._gave_way += 1
                    self.limits.gave_way += 1
                    return True
        return False

    def _tell_crowded(self) -> None:
        """Log, at most every few seconds, what the cap has done."""
        now = self.limits.seconds()
        if self._told_at is not None and now - self._told_at < CROWDED_LOG_EVERY:
            return
        self._told_at = now
        self.log.warn(
            "{count} connections open, the limit: {gave_way} idle ones closed to make"
            " room and {refused} new ones refused (RATE_LIMITED) lately",
            count=len(self.connections),
            gave_way=self._gave_way,
            refused=self._refused,
        )
        self._gave_way = self._refused = 0

    def _sweep_every(self) -> float:
        return max(0.5, min(30.0, self.limits.idle_timeout / 4))

    def _sweep_idle(self) -> None:
        """Close the connections idle for longer than the idle timeout."""
        self._idle_sweep = None
        limits = self.limits
        now = limits.seconds()
        for protocol in list(self.connections):
            if protocol._frames != protocol._idle_frames or not protocol.idle:
                protocol._idle_frames = protocol._frames
                protocol._idle_since = now
            elif now - protocol._idle_since >= limits.idle_timeout:
                self._forget(protocol)
                protocol.close_idle()
        if self.connections and self._listening:
            self._idle_sweep = limits.call_later(self._sweep_every(), self._sweep_idle)

    def _forget(self, protocol: FrameProtocol) -> None:
        self.connections.pop(protocol, None)
        self._silent.pop(protocol, None)
        if not self.connections:
            self._stop_idle_sweep()

    def _stop_idle_sweep(self) -> None:
        if self._idle_sweep is not None:
            if self._idle_sweep.active():
                self._idle_sweep.cancel()
            self._idle_sweep = None

    def startFactory(self) -> None:  # noqa: N802 (Twisted name)
        self._listening = True

    def stopFactory(self) -> None:  # noqa: N802 (Twisted name)
        # No port listens any more: the service is stopping, and the
        # connections left are being drained and closed.
        self._listening = False
        self._stop_idle_sweep()

    def connection_lost(self, protocol: FrameProtocol) -> None:
        self._forget(protocol)

    def track(self, d: defer.Deferred) -> defer.Deferred:
        """Remember C{d} until it fires."""
        self._in_flight.add(d)

        def forget(result):
            self._in_flight.discard(d)
            return result

        return d.addBoth(forget)

    def drain(self) -> defer.Deferred:
        """A Deferred that fires once every request in flight is answered."""
        return defer.DeferredList([when_fired(d) for d in list(self._in_flight)])

    def close_connections(self) -> None:
        """Close every open connection once its answers are written."""
        for protocol in list(self.connections):
            self._forget(protocol)
            protocol.close()


__all__ = ["FrameProtocol", "FrameFactory", "DEFAULT_MAX_FRAME"]
