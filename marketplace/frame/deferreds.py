"""Small helpers for Deferreds that Twisted does not have."""

from twisted.internet import defer


def when_fired(d: defer.Deferred) -> defer.Deferred:
    """A new Deferred that fires (with None) when C{d} does, leaving C{d}
    and its result be: for waiting on work that others wait on too."""
    waiter: defer.Deferred = defer.Deferred()

    def fire(result):
        if not waiter.called:
            waiter.callback(None)
        return result

    d.addBoth(fire)
    return waiter


__all__ = ["when_fired"]
