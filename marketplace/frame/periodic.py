"""The one mechanism for periodic jobs: L{PeriodicJob}, a service.

Every job a daemon runs now and then -- the session sweep, the purchase
sweep, the look at the embedded PostgreSQL -- is one of these, so they all
start, fail and stop the same way.
"""

from typing import Awaitable, Callable, Optional

from twisted.application.service import Service
from twisted.internet import defer, task
from twisted.logger import Logger

from marketplace.frame.unavailable import is_unavailable


class PeriodicJob(Service):
    """Runs C{job} (a coroutine function) every C{interval} seconds on
    C{clock} (the reactor), the first time at once (after one interval if
    not C{now}).

    With C{after} (a function returning a Deferred, such as
    L{Backend.ready}), the first run waits for that Deferred, and the job
    never runs if it fails.  A run that fails is logged (in one line if the
    database could not be reached: the pool has said so already) and the
    job runs again at the next interval; a run never overlaps the one
    before.  Stopping waits for the run under way, if any.
    """

    log = Logger()

    def __init__(
        self,
        name: str,
        interval: float,
        job: Callable[[], Awaitable],
        clock,
        after: Optional[Callable[[], defer.Deferred]] = None,
        now: bool = True,
    ) -> None:
        self.name = name
        self.interval = interval
        self.job = job
        self.after = after
        self.clock = clock
        self.now = now
        self._loop: Optional[task.LoopingCall] = None

    def startService(self):
        super().startService()
        if self.after is None:
            self._start_loop(None)
        else:
            self.after().addCallbacks(self._start_loop, lambda _: None)

    def _start_loop(self, _) -> None:
        if not self.running or self._loop is not None:
            return
        self._loop = task.LoopingCall(self._run)
        self._loop.clock = self.clock
        self._loop.start(self.interval, now=self.now)

    def _run(self) -> defer.Deferred:
        return defer.Deferred.fromCoroutine(self._run_once())

    async def _run_once(self) -> None:
        try:
            await self.job()
        except Exception as e:
            if is_unavailable(e):
                self.log.info("{name} skipped: {error}", name=self.name, error=e)
            else:
                self.log.failure("{name} failed; it will run again", name=self.name)

    def stopService(self):
        super().stopService()
        loop, self._loop = self._loop, None
        if loop is not None and loop.running:
            d = loop.deferred
            loop.stop()
            return d
        return None


__all__ = ["PeriodicJob"]
