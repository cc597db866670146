"""Telling the log about trouble without flooding it: L{LogLimiter} lets
through at most one line per distinct problem in a few seconds and counts
the rest; L{describe} gives a failure's reason in one line.  Neither needs
a network: they take a clock."""

from typing import Any, Dict, Hashable, List

from twisted.logger import Logger, LogLevel

#: Seconds between two lines about the same problem.
QUIET_FOR = 5.0

#: Characters of a reason told at most.
MAX_REASON = 200


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


__all__ = ["LogLimiter", "describe", "QUIET_FOR"]
