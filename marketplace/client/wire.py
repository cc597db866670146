"""The client side of the framing: JSON requests out, answers back in order.

Requests may be pipelined; the server answers in the order they were sent,
so each answer completes the oldest request still waiting.
"""

import json
from collections import deque
from decimal import Decimal
from typing import Any

from twisted.internet import defer
from twisted.internet.error import ConnectionLost
from twisted.logger import Logger
from twisted.protocols.basic import Int32StringReceiver
from twisted.python.failure import Failure

from marketplace.writes import framed, write_now


def _to_json(value: Any) -> Any:
    if isinstance(value, Decimal):
        # The shortest repr of the float is the decimal that was given, for
        # any price the protocol allows (at most 12 significant digits).
        return float(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


_ENCODER = json.JSONEncoder(default=_to_json, ensure_ascii=False, separators=(",", ":"))
_DECODER = json.JSONDecoder(parse_float=Decimal)


def encode(message: dict) -> bytes:
    """A request envelope as one frame body."""
    return _ENCODER.encode(message).encode("utf-8")


def decode(frame: bytes) -> dict:
    """An answer frame as a dict; numbers with a fraction become Decimal, so
    prices and totals stay exact.  Raises ValueError for anything else."""
    answer = _DECODER.decode(frame.decode("utf-8"))
    if not isinstance(answer, dict):
        raise ValueError("the answer is not a JSON object")
    return answer


class ClientProtocol(Int32StringReceiver):
    """One connection to a service.

    L{request} sends an envelope and returns a Deferred of the decoded
    answer; when the connection is lost, every request still waiting fails
    with L{ConnectionLost}.
    """

    log = Logger()
    # Answers (a long search) may be larger than the server's request limit.
    MAX_LENGTH = 64 * 1024 * 1024

    def __init__(self) -> None:
        self._waiting: deque = deque()
        self._lost_waiters: list = []
        self._open = False

    def connectionMade(self) -> None:
        self._open = True

    @property
    def open(self) -> bool:
        """Whether requests can be sent on this connection."""
        return self._open and not self.transport.disconnecting

    def when_lost(self) -> "defer.Deferred[None]":
        """A Deferred that fires (with None) once this connection is closed."""
        if not self._open and self.transport is not None:
            return defer.succeed(None)
        d: defer.Deferred = defer.Deferred()
        self._lost_waiters.append(d)
        return d

    def request(self, message: dict) -> "defer.Deferred[dict]":
        """Send one request envelope; a Deferred of its answer."""
        d: defer.Deferred = defer.Deferred()
        self._waiting.append(d)
        write_now(self.transport, framed(encode(message)))
        return d

    def stringReceived(self, frame: bytes) -> None:
        if not self._waiting:
            self.log.warn("an answer came that no request was waiting for; closing")
            self.transport.abortConnection()
            return
        try:
            answer = decode(frame)
        except ValueError as e:
            self.log.warn(
                "the server sent a frame that is not a JSON object ({error})", error=e
            )
            self.transport.abortConnection()
            return
        self._waiting.popleft().callback(answer)

    def lengthLimitExceeded(self, length: int) -> None:
        self.log.warn(
            "an answer of {length} bytes is over the limit; closing", length=length
        )
        self.transport.abortConnection()

    def connectionLost(self, reason: Failure = None) -> None:
        self._open = False
        waiting, self._waiting = self._waiting, deque()
        for d in waiting:
            d.errback(Failure(ConnectionLost(str(reason.value) if reason else "")))
        lost_waiters, self._lost_waiters = self._lost_waiters, []
        for d in lost_waiters:
            d.callback(None)


__all__ = ["ClientProtocol", "encode", "decode"]
