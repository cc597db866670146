"""The client side of the framing: JSON requests out, answers back in order.

Requests may be pipelined; the server answers in the order they were sent,
so each answer completes the oldest request still waiting.
L{FramedJsonClient} is that, and the one framed-JSON client of the project:
the client library's L{ClientProtocol} adds what a person's program needs
(TLS handshakes, telling a TLS port from a plaintext one), the buyer
service's client of the payments service and the tests' wire client use it
as it is.
"""

import json
import re
from collections import deque
from decimal import Decimal
from typing import Optional

from twisted.internet import defer
from twisted.internet.error import ConnectionLost
from twisted.internet.interfaces import IHandshakeListener, ISSLTransport
from twisted.logger import Logger
from twisted.protocols.basic import Int32StringReceiver
from twisted.python.failure import Failure
from zope.interface import implementer

from marketplace.clientlib.errors import ClientError
from marketplace.contract.errors import UNAVAILABLE

from marketplace.frame.dispatch import json_default
from marketplace.frame.protocol import framed, write_now


_ENCODER = json.JSONEncoder(default=json_default, ensure_ascii=False, separators=(",", ":"))
_DECODER = json.JSONDecoder(parse_float=Decimal)


def encode(message: dict) -> bytes:
    """A request envelope as one frame body."""
    return _ENCODER.encode(message).encode("utf-8")


def decode(frame: bytes, decoder: json.JSONDecoder = _DECODER) -> dict:
    """An answer frame as a dict; numbers with a fraction become Decimal, so
    prices and totals stay exact (unless C{decoder} says otherwise).
    Raises ValueError for anything else."""
    answer = decoder.decode(frame.decode("utf-8"))
    if not isinstance(answer, dict):
        raise ValueError("the answer is not a JSON object")
    return answer


# The first bytes of a TLS record (handshake or alert, TLS 1.0 to 1.3): what
# a TLS server sends back to a client that spoke plain frames to it.
_TLS_RECORD = re.compile(rb"[\x15\x16]\x03[\x00-\x04]")


def tls_problem(reason: Failure, where: str) -> str:
    """Why a TLS connection ended before its handshake was done, in words."""
    detail = str(reason.value)
    if "certificate verify failed" in detail or "VerificationError" in repr(
        reason.value
    ):
        return (
            f"the certificate of {where} is not trusted (it is not signed by the"
            " CA given, or not for that host name); check --ca-cert or trustRoots"
        )
    return (
        f"{where} does not speak TLS: is it a plaintext port? Connect without"
        " --ca-cert (or with a tcp: endpoint)"
    )


def plaintext_problem(where: str, sure: bool = True) -> str:
    """What to say when a plaintext client gets TLS back (C{sure}), or has
    its connections closed without an answer, as TLS servers do."""
    if sure:
        lead = f"{where} speaks TLS, not plain frames"
    else:
        lead = (
            f"{where} closed the connection twice without answering; it may be"
            " a TLS port"
        )
    return lead + ": connect with --ca-cert CA.pem (or a tls: endpoint)"


class FramedJsonClient(Int32StringReceiver):
    """Requests out, JSON answers back in the order they were sent.

    L{send} (an envelope) and L{send_frame} (a frame body as it is) return
    a Deferred of the decoded answer.  When the connection is lost, every
    request still waiting fails (with L{lost_error} of the reason) and
    L{closed} fires.  A request sent with C{until}, a time on C{clock},
    drops the connection if its answer has not come by then: answers come
    in order, so one that is stuck holds up every later one.  An answer
    that is not a JSON object, or that no request waits for, closes the
    connection.
    """

    log = Logger()
    # Answers (a long search) may be larger than the server's request limit.
    MAX_LENGTH = 64 * 1024 * 1024
    #: How the answers are read; plain floats with json.JSONDecoder().
    decoder: json.JSONDecoder = _DECODER

    def __init__(self, clock=None) -> None:
        #: The Deferreds of the requests waiting for an answer, oldest first.
        self.pending: deque = deque()
        #: Fires (with None) once the connection is closed.
        self.closed: defer.Deferred = defer.Deferred()
        self._clock = clock
        # (until, Deferred) of the requests sent with a time limit.
        self._due: deque = deque()
        self._watchdog = None
        self._open = False
        self._retiring = False
        self._lost_waiters: list = []
        #: Whether this connection was dropped because an answer was late.
        self.timed_out = False

    def connectionMade(self) -> None:
        self._open = True

    @property
    def lost(self) -> bool:
        """Whether this connection is closed (or not yet made)."""
        return not self._open

    def when_lost(self) -> "defer.Deferred[None]":
        """A new Deferred that fires (with None) once this connection is
        closed."""
        if not self._open and self.transport is not None:
            return defer.succeed(None)
        d: defer.Deferred = defer.Deferred()
        self._lost_waiters.append(d)
        return d

    def send(self, message: dict, until: Optional[float] = None) -> "defer.Deferred[dict]":
        """Send one envelope; a Deferred of its answer (see L{send_frame})."""
        return self.send_frame(encode(message), until)

    def send_frame(self, body: bytes, until: Optional[float] = None) -> "defer.Deferred[dict]":
        """Send one frame body; a Deferred of its answer, due by C{until}
        (a time on the clock) if given."""
        d: defer.Deferred = defer.Deferred()
        self.pending.append(d)
        if until is not None:
            due = self._due
            # Answered ones go from the front: answers come in order.
            while due and due[0][1].called:
                due.popleft()
            due.append((until, d))
            if self._watchdog is None:
                self._watch()
        write_now(self.transport, framed(body))
        return d

    def _watch(self) -> None:
        """Drop the connection if an answer is late, else look again when
        the next one is due."""
        self._watchdog = None
        if not self._open:
            return
        due = min((u for u, d in self._due if not d.called), default=None)
        if due is None:
            self._due.clear()
            return
        now = self._clock.seconds()
        if due > now:
            self._watchdog = self._clock.callLater(due - now, self._watch)
            return
        self.log.info("an answer is late; dropping the connection")
        self.timed_out = True
        self.transport.abortConnection()

    def close_when_idle(self) -> None:
        """Take no more requests; close once every answer waited for is in."""
        self._retiring = True
        if not self.pending and self._open:
            self.transport.loseConnection()

    def stringReceived(self, frame: bytes) -> None:
        if not self.pending:
            self.log.warn("an answer came that no request was waiting for; closing")
            self.transport.abortConnection()
            return
        try:
            answer = decode(frame, self.decoder)
        except ValueError as e:
            self.log.warn(
                "the server sent a frame that is not a JSON object ({error})", error=e
            )
            self.transport.abortConnection()
            return
        d = self.pending.popleft()
        if not d.called:  # else its caller cancelled it
            d.callback(answer)
        if self._retiring and not self.pending and self._open:
            self.transport.loseConnection()

    def lengthLimitExceeded(self, length: int) -> None:
        self.log.warn(
            "an answer of {length} bytes is over the limit; closing", length=length
        )
        self.transport.abortConnection()

    def lost_error(self, reason: Failure) -> Failure:
        """What the requests still waiting fail with when the connection is
        lost for C{reason}: the reason itself."""
        return reason

    def connectionLost(self, reason: Failure = None) -> None:
        self._open = False
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None
        self._due.clear()
        error = self.lost_error(reason)
        waiting, self.pending = self.pending, deque()
        for d in waiting:
            d.errback(error)
        lost_waiters, self._lost_waiters = self._lost_waiters, []
        for d in lost_waiters:
            d.callback(None)
        self.closed.callback(None)


class SilentClose(ConnectionLost):
    """The other end closed a new connection without a byte in answer to a
    request: what a TLS server does with plain frames (it sends no alert)."""


@implementer(IHandshakeListener)
class ClientProtocol(FramedJsonClient):
    """One connection of the client library to a service.

    When the connection is lost, every request still waiting fails with
    L{ConnectionLost}, or with L{ClientError} when the other end turned out
    not to speak this protocol (TLS against plain frames, a certificate not
    trusted): sending again would not help then.

    L{ready} fires once requests can be sent: at once over TCP, after the
    handshake over TLS (a handshake that fails fails it).
    """

    def __init__(self, where: str = "the service", clock=None) -> None:
        super().__init__(clock)
        self.where = where
        self._tls = False
        self._handshaken = False
        self._heard = False
        self._sent = False
        #: Why this connection cannot carry requests, in words, if it cannot.
        self.problem: Optional[str] = None
        self.ready: defer.Deferred = defer.Deferred()

    def connectionMade(self) -> None:
        super().connectionMade()
        self._tls = ISSLTransport.providedBy(self.transport)
        if not self._tls:
            self.ready.callback(self)

    def handshakeCompleted(self) -> None:
        self._handshaken = True
        if not self.ready.called:
            self.ready.callback(self)

    def dataReceived(self, data: bytes) -> None:
        if not self._heard:
            self._heard = True
            if not self._tls and _TLS_RECORD.match(data):
                self.problem = plaintext_problem(self.where)
                self.transport.abortConnection()
                return
        super().dataReceived(data)

    @property
    def open(self) -> bool:
        """Whether requests can be sent on this connection."""
        return self._open and not self._retiring and not self.transport.disconnecting

    def send_frame(self, body: bytes, until: Optional[float] = None) -> "defer.Deferred[dict]":
        self._sent = True
        return super().send_frame(body, until)

    def lost_error(self, reason: Failure) -> Failure:
        if self._tls and not self._handshaken and self.problem is None and reason:
            self.problem = tls_problem(reason, self.where)
        if self.problem is not None:
            return Failure(ClientError(UNAVAILABLE, self.problem))
        silent = self._sent and not self._heard and not self.timed_out
        lost = SilentClose if silent else ConnectionLost
        return Failure(lost(str(reason.value) if reason else ""))

    def connectionLost(self, reason: Failure = None) -> None:
        error = self.lost_error(reason)
        if not self.ready.called:
            self.ready.errback(error)
        super().connectionLost(reason)


__all__ = ["ClientProtocol", "FramedJsonClient", "SilentClose", "encode", "decode"]
