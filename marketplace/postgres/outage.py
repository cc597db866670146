"""Telling the log about trouble without flooding it.

L{Outage} follows whether one database can be reached: it says once that
the database is down and why, reminds now and then while it stays down,
counts the requests that failed meanwhile, and says when it is back.
L{LogLimiter} lets through at most one line per distinct problem in a few
seconds and counts the rest.  Neither needs a network: they take a clock.
"""

from typing import Any, Dict, Hashable, List, Optional

from twisted.logger import Logger, LogLevel

#: Seconds between two lines about the same problem.
QUIET_FOR = 5.0

#: Characters of a reason told at most.
MAX_REASON = 200

#: Seconds between two reminders that a database is still down.
REMIND_EVERY = 30.0


def describe(error: Any) -> str:
    """A one-line reason for a failure or exception, never empty."""
    value = getattr(error, "value", error)
    text = " ".join(str(value).split())
    if len(text) > MAX_REASON:
        text = text[: MAX_REASON - 1] + "…"
    name = type(value).__name__
    return f"{name}: {text}" if text else name


class LogLimiter:
    """Logs at most one line per key every C{interval} seconds; the lines
    held back are counted and the count is told with the next line."""

    #: Keys remembered at most, so that odd keys cannot fill the memory.
    MAX_KEYS = 1000

    def __init__(self, log: Logger, clock=None, interval: float = QUIET_FOR) -> None:
        self.log = log
        if clock is None:
            from twisted.internet import reactor as clock
        self.clock = clock
        self.interval = interval
        self._last: Dict[Hashable, List] = {}

    def emit(self, key: Hashable, level: LogLevel, format: str, **fields: Any) -> bool:
        """Log C{format} unless a line of C{key} was logged less than
        C{interval} seconds ago; whether it was logged."""
        now = self.clock.seconds()
        seen = self._last.get(key)
        if seen is not None and now - seen[0] < self.interval:
            seen[1] += 1
            return False
        if len(self._last) >= self.MAX_KEYS:
            self._last = {
                k: v for k, v in self._last.items() if now - v[0] < self.interval
            }
            if len(self._last) >= self.MAX_KEYS:
                self._last = {}
        held = seen[1] if seen is not None else 0
        self._last[key] = [now, 0]
        if held:
            format += " ({held} more like it in the last {seconds:.0f} s)"
            fields.update(held=held, seconds=now - seen[0])
        self.log.emit(level, format, **fields)
        return True


class Outage:
    """Whether the database C{name} can be reached, as the log tells it."""

    log = Logger()

    def __init__(self, name: str, clock) -> None:
        self.name = name
        self.clock = clock
        #: When the outage began, or None while the database is up.
        self.down_since: Optional[float] = None
        #: Why it is down (the last reason seen).
        self.reason = ""
        #: Requests that failed since the outage began.
        self.failed = 0
        self._reminded = 0.0
        self._limiter = LogLimiter(self.log, clock)

    @property
    def down(self) -> bool:
        return self.down_since is not None

    def connection_lost(self, reason: str) -> None:
        """A pool connection broke; the pool opens another."""
        self._limiter.emit(
            ("lost", reason),
            LogLevel.warn,
            "lost a connection to the {name} database ({reason}); opening another",
            name=self.name,
            reason=reason,
        )

    def cannot_open(self, reason: str) -> None:
        """A connection could not be opened while others are open."""
        self._limiter.emit(
            ("open", reason),
            LogLevel.warn,
            "cannot open one more connection to the {name} database ({reason}); trying again",
            name=self.name,
            reason=reason,
        )

    def unreachable(self, reason: str) -> None:
        """A connection could not be opened: the database is down."""
        now = self.clock.seconds()
        self.reason = reason
        if self.down_since is None:
            self.down_since = self._reminded = now
            self.failed = 0
            self.log.warn(
                "the {name} database is down ({reason}); requests that need it"
                " are answered UNAVAILABLE until it is back",
                name=self.name,
                reason=reason,
            )
        elif now - self._reminded >= REMIND_EVERY:
            self._reminded = now
            self.log.warn(
                "the {name} database is still down after {seconds:.0f} s ({reason});"
                " {failed} requests failed so far",
                name=self.name,
                seconds=now - self.down_since,
                reason=reason,
                failed=self.failed,
            )

    def call_failed(self) -> None:
        """A request found the database unreachable."""
        self.failed += 1

    def reachable(self) -> None:
        """A connection was opened: the database is up (again)."""
        if self.down_since is None:
            return
        self.log.info(
            "the {name} database is back after {seconds:.1f} s;"
            " {failed} requests failed meanwhile",
            name=self.name,
            seconds=self.clock.seconds() - self.down_since,
            failed=self.failed,
        )
        self.down_since = None
        self.failed = 0


__all__ = ["LogLimiter", "Outage", "describe", "QUIET_FOR"]
