"""Limits that keep hostile or broken clients from starving honest ones.

One L{Limits} is shared by every listener of a daemon:

- C{max_connections}: connections open at once to each service (each
  service counts its own, so a flood of one port leaves the others, and
  the buyer service's own connection to payments, be).  At the cap, an
  idle connection gives way to the new one: the oldest of those that never
  sent a request, else the one idle the longest; when every connection is
  working on a request, the new one is answered C{RATE_LIMITED} and closed.
- C{idle_timeout}: seconds a connection may stay open without sending a
  request (and with no answer pending); then it is closed.  Sessions live
  in the database, and the client library reconnects.
- C{max_in_flight}: requests of one connection being worked on at once.  A
  client that pipelines more is not refused: the server stops reading from
  that connection until answers drain below the cap, so the client's own
  sending slows down (TCP flow control) and the other connections go on.
- C{max_unsent}: bytes of answers one connection may have waiting to be
  sent (the transport's buffer) before the server stops reading it; with
  C{max_in_flight} it bounds a connection's memory, however slowly the
  client reads.
- C{frame_timeout}: seconds a connection may take to send the rest of a
  frame it has started; one that stalls half-way is closed.

Failed logins are limited in the customer database (see
L{marketplace.customer.accounts}); their numbers are here.
"""

import resource
from dataclasses import dataclass
from typing import Any, Optional

from twisted.python import usage

DEFAULT_MAX_CONNECTIONS = 1000
DEFAULT_MAX_IN_FLIGHT = 16
DEFAULT_FRAME_TIMEOUT = 30.0
DEFAULT_MAX_UNSENT = 256 * 1024
DEFAULT_IDLE_TIMEOUT = 300.0

#: File descriptors a daemon keeps for itself besides its clients'
#: connections (pools, listeners, logs, workers).
SPARE_FILES = 256

#: Failed logins of one username (per role) after which Login answers
#: RATE_LIMITED, until LOGIN_WINDOW seconds have passed since the first.
MAX_LOGIN_FAILURES = 5
LOGIN_WINDOW = 300.0

OPTIONS = [
    ["max-connections", None, str(DEFAULT_MAX_CONNECTIONS),
     "Connections open at once to each service; beyond it an idle one gives"
     " way, else the new one is answered RATE_LIMITED and closed."],
    ["idle-timeout", None, str(DEFAULT_IDLE_TIMEOUT),
     "Seconds a connection may stay open without a request before it is"
     " closed; 0 for never."],
    ["max-in-flight", None, str(DEFAULT_MAX_IN_FLIGHT),
     "Requests of one connection worked on at once; beyond it the server"
     " stops reading that connection until answers drain."],
    ["max-unsent", None, str(DEFAULT_MAX_UNSENT),
     "Bytes of answers one connection may have waiting to be sent; beyond"
     " it the server stops reading that connection until they drain."],
    ["frame-timeout", None, str(DEFAULT_FRAME_TIMEOUT),
     "Seconds a client may take to finish sending a frame it has started;"
     " a connection that stalls half-way is closed."],
]


@dataclass
class Limits:
    """The limits of one daemon.

    C{clock} (an L{IReactorTime}) runs the frame timeouts; None means the
    global reactor.
    """

    max_connections: int = DEFAULT_MAX_CONNECTIONS
    max_in_flight: int = DEFAULT_MAX_IN_FLIGHT
    frame_timeout: float = DEFAULT_FRAME_TIMEOUT
    max_unsent: int = DEFAULT_MAX_UNSENT
    clock: Any = None
    idle_timeout: float = DEFAULT_IDLE_TIMEOUT
    #: Connections refused so far, and idle ones closed to make room, over
    #: every service (marketplace.observability.metrics reports them).
    refused: int = 0
    gave_way: int = 0

    def seconds(self) -> float:
        """The clock's time."""
        clock = self.clock
        if clock is None:
            from twisted.internet import reactor as clock
        return clock.seconds()

    def call_later(self, seconds: float, f, *args):
        """Schedule C{f(*args)} on the clock; the L{IDelayedCall}."""
        clock = self.clock
        if clock is None:
            from twisted.internet import reactor as clock
        return clock.callLater(seconds, f, *args)


def from_options(options) -> Limits:
    """The L{Limits} named by the L{OPTIONS} of parsed twistd options."""
    try:
        limits = Limits(
            max_connections=int(options["max-connections"]),
            max_in_flight=int(options["max-in-flight"]),
            frame_timeout=float(options["frame-timeout"]),
            max_unsent=int(options["max-unsent"]),
            idle_timeout=float(options["idle-timeout"]),
        )
    except ValueError as e:
        raise usage.UsageError(f"a limit is not a number: {e}")
    if (
        limits.max_connections < 1
        or limits.max_in_flight < 1
        or limits.frame_timeout <= 0
        or limits.idle_timeout < 0
    ):
        raise usage.UsageError(
            "--max-connections and --max-in-flight must be at least 1,"
            " --frame-timeout above 0, --idle-timeout at least 0"
        )
    if limits.max_unsent < 1:
        raise usage.UsageError("--max-unsent must be at least 1")
    return limits


def ensure_file_limit(services: int, limits: Limits) -> int:
    """Raise this process's limit of open files (up to the hard limit) so
    that C{services} services can each hold C{limits.max_connections}
    connections; the limit now.  Accepting a connection beyond it would
    fail for every port of the process at once."""
    needed = services * limits.max_connections + SPARE_FILES
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < needed:
        new = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))
            soft = new
        except (ValueError, OSError):
            pass
    return soft


def listen_descriptions(value: Optional[Any]) -> list:
    """Endpoint descriptions given as one string or a list of them."""
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    return list(value)
