"""Waiting longer after each failed attempt: the one back-off of the house,
on Twisted's own L{backoffPolicy} (that of L{ClientService})."""

import random

from twisted.application.internet import backoffPolicy


class Backoff:
    """The delays before successive attempts: C{first} seconds, then
    C{factor} times the one before, at most C{most}; each spread by up to
    C{jitter} (a fraction) either way, so that many clients that failed at
    once do not try again at once."""

    def __init__(self, first: float, most: float, factor: float = 2.0, jitter: float = 0.0):
        self._policy = backoffPolicy(first, most, factor, jitter=lambda: 0.0)
        self._jitter = jitter
        self.attempts = 0

    def next(self) -> float:
        """The delay before the next attempt."""
        delay = self._policy(self.attempts)
        self.attempts += 1
        if self._jitter:
            delay *= random.uniform(1 - self._jitter, 1 + self._jitter)
        return delay


__all__ = ["Backoff"]
