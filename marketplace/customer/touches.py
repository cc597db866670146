"""Sessions' "last seen" moved on for the reads a standby answered.

A standby cannot write, so a read served there checks its session without
touching it (customerdb.LIVE_SESSION_READ) and the touch goes to the
primary afterwards, not waited for: at most once every L{TOUCH_EVERY}
seconds per session and process, and lost without harm while the primary
cannot be reached.  A session used only through standbys thus looks up to
L{TOUCH_EVERY} seconds (plus the standby's replay lag) older than it is:
it may end that much before its timeout, never after it (the sweep that
ends sessions runs on the primary, on the last_seen the touches wrote).
"""

from typing import Dict, Optional

from twisted.internet import defer

from marketplace.customer import customerdb
from marketplace.postgres.database import Database

#: Seconds between two touches of one session by one process.
TOUCH_EVERY = 5.0
#: Sessions remembered before the oldest entries are forgotten.
REMEMBERED = 100_000


class Touches:
    """The touches of one role's sessions sent to the primary of C{db}."""

    def __init__(self, db: Database, role: str, timeout: float, clock) -> None:
        self.db = db
        self.role = role
        self.timeout = timeout
        self.clock = clock
        self._last: Dict[str, float] = {}

    def due(self, key: str) -> bool:
        """Whether session C{key} is to be touched now (and note it)."""
        now = self.clock.seconds()
        last: Optional[float] = self._last.get(key)
        if last is not None and now - last < TOUCH_EVERY:
            return False
        if len(self._last) >= REMEMBERED:
            self._forget(now)
        self._last[key] = now
        return True

    def _forget(self, now: float) -> None:
        self._last = {k: t for k, t in self._last.items() if now - t < TOUCH_EVERY}

    def touch(self, key: str) -> None:
        """Touch session C{key} on the primary if due; not waited for."""
        if not self.due(key):
            return
        d = defer.ensureDeferred(
            customerdb.touch_session(self.db, key, self.role, self.timeout)
        )
        d.addErrback(lambda _: None)  # the primary is away: the next read touches it


__all__ = ["TOUCH_EVERY", "Touches"]
