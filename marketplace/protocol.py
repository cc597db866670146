"""The framed server protocol shared by every marketplace service.

A frame is a 4-byte big-endian length and that many bytes of UTF-8 JSON
(L{Int32StringReceiver}).  Requests on one connection may be pipelined; the
answers are written in the order the requests arrived, however long each one
takes.  What a frame means is the dispatcher's business, not this module's.
"""

from collections import deque
from typing import Callable

from twisted.internet import defer
from twisted.internet.protocol import Factory
from twisted.logger import Logger
from twisted.protocols.basic import Int32StringReceiver

from marketplace import envelope
from marketplace.errors import FRAME_TOO_LARGE

DEFAULT_MAX_FRAME = 1024 * 1024

FrameHandler = Callable[[bytes], "defer.Deferred[bytes]"]


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
        self.factory.connection_made(self)

    def connectionLost(self, reason=None) -> None:
        self._closing = True
        self.factory.connection_lost(self)

    def dataReceived(self, data: bytes) -> None:
        if not self._closing:
            super().dataReceived(data)

    def stringReceived(self, frame: bytes) -> None:
        slot = _Slot()
        self._answers.append(slot)
        d = self.factory.track(self.factory.handle_frame(frame))
        d.addCallback(self._answer_ready, slot)
        d.addErrback(self._handler_failed, slot)

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
            envelope.encode(envelope.error(None, FRAME_TOO_LARGE, message)), slot
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
        while answers and answers[0].ready:
            self.sendString(answers.popleft().data)
        if self._closing and not answers:
            self.transport.loseConnection()


class FrameFactory(Factory):
    """Builds L{FrameProtocol}s around one frame handler.

    It counts open connections and keeps the answers still being worked on,
    so a stopping service can wait for them.
    """

    protocol = FrameProtocol
    noisy = False

    def __init__(
        self,
        handle_frame: FrameHandler,
        max_frame: int = DEFAULT_MAX_FRAME,
    ) -> None:
        self.handle_frame = handle_frame
        self.max_frame = max_frame
        self.connections: set = set()
        self._in_flight: set = set()

    def connection_made(self, protocol: FrameProtocol) -> None:
        self.connections.add(protocol)

    def connection_lost(self, protocol: FrameProtocol) -> None:
        self.connections.discard(protocol)

    def track(self, d: defer.Deferred) -> defer.Deferred:
        """Remember C{d} until it fires."""
        self._in_flight.add(d)

        def forget(result):
            self._in_flight.discard(d)
            return result

        return d.addBoth(forget)

    def drain(self) -> defer.Deferred:
        """A Deferred that fires once every request in flight is answered."""
        return defer.DeferredList([_when_fired(d) for d in list(self._in_flight)])

    def close_connections(self) -> None:
        """Close every open connection once its answers are written."""
        for protocol in list(self.connections):
            protocol.transport.loseConnection()


def _when_fired(d: defer.Deferred) -> defer.Deferred:
    """A new Deferred that fires (with None) when C{d} does, leaving C{d} be."""
    waiter: defer.Deferred = defer.Deferred()

    def fire(result):
        if not waiter.called:
            waiter.callback(None)
        return result

    d.addBoth(fire)
    return waiter


__all__ = ["FrameProtocol", "FrameFactory", "DEFAULT_MAX_FRAME"]
