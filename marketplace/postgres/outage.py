"""Telling the log about a database's outage without flooding it.

L{Outage} follows whether one database can be reached: it says once that
the database is down and why, reminds now and then while it stays down,
counts the requests that failed meanwhile, and says when it is back.  It
needs no network: it takes a clock.
"""

from typing import Optional

from twisted.logger import Logger, LogLevel

from marketplace.frame.quietlog import LogLimiter

#: Seconds between two reminders that a database is still down.
REMIND_EVERY = 30.0


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


__all__ = ["Outage", "REMIND_EVERY"]
