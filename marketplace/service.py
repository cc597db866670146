"""The services a marketplace daemon is made of.

L{Backend} owns the databases (and the embedded server, if there is one);
L{ApiServer} listens for one API service once the backend is ready;
L{PeriodicJob} runs a job now and then once the backend is ready.
L{OrderedMultiService} stops its children one after the other, last added
first, so listeners are closed and drained before the pools go.
"""

from typing import Optional

from twisted.application.internet import TimerService
from twisted.application.service import MultiService, Service
from twisted.internet import defer, task, threads
from twisted.internet.interfaces import IStreamServerEndpoint
from twisted.logger import Logger

from marketplace import schema
from marketplace.config import Settings
from marketplace.database import Database, is_unavailable
from marketplace.embedded import DAEMON_DATABASES, EmbeddedPostgres
from marketplace.housekeeping import sweep_sessions
from marketplace.outage import describe
from marketplace.passwords import Passwords
from marketplace.protocol import FrameFactory


def stop_reactor(reactor=None) -> None:
    """Stop the reactor if it runs: a daemon that cannot serve should exit."""
    if reactor is None:
        from twisted.internet import reactor
    if reactor.running:
        reactor.stop()


class OrderedMultiService(MultiService):
    """A MultiService that stops one child at a time, in reverse order."""

    def stopService(self):
        Service.stopService(self)
        return defer.Deferred.fromCoroutine(self._stop_children())

    async def _stop_children(self) -> None:
        for child in reversed(list(self)):
            await defer.maybeDeferred(child.stopService)


class Backend(Service):
    """The databases of one daemon: of customer, product and payments, those
    named in C{databases}.

    Starting it starts the embedded PostgreSQL when one of them is not
    configured, applies schema.sql and opens their pools; L{ready} fires
    then.  If that fails the daemon cannot serve, so the reactor is stopped.
    """

    log = Logger()

    def __init__(
        self,
        settings: Settings,
        reactor=None,
        databases=("customer", "product"),
        passwords: Optional[Passwords] = None,
    ) -> None:
        self.settings = settings
        self.reactor = reactor
        durable = not settings.unsafe_async_commit
        self.customer = Database(
            "customer", settings.customer_db, settings.pool_size, reactor, durable
        )
        self.product = Database("product", settings.product_db, settings.pool_size, reactor, durable)
        self.payments = Database(
            "payments", settings.payments_db, settings.pool_size, reactor, durable
        )
        self.databases = [
            db for db in (self.customer, self.product, self.payments) if db.name in databases
        ]
        self.passwords = passwords or Passwords()
        self._embedded: Optional[EmbeddedPostgres] = None
        self._waiters: list = []
        self._outcome = None
        self._sweeper = TimerService(
            min(60.0, settings.session_timeout), self._sweep
        )

    @property
    def ready_failed(self) -> bool:
        """Whether the databases could not be set up."""
        return self._outcome not in (None, True)

    def ready(self) -> defer.Deferred:
        """A Deferred that fires when the databases are open."""
        if self._outcome is not None:
            return defer.succeed(None) if self._outcome is True else defer.fail(self._outcome)
        d: defer.Deferred = defer.Deferred()
        self._waiters.append(d)
        return d

    def _settle(self, outcome) -> None:
        self._outcome = outcome
        waiters, self._waiters = self._waiters, []
        for d in waiters:
            d.callback(None) if outcome is True else d.errback(outcome)

    def startService(self):
        super().startService()
        d = defer.Deferred.fromCoroutine(self._start())
        d.addCallbacks(lambda _: self._settle(True), self._start_failed)

    async def _start(self) -> None:
        if any(db.dsn is None for db in self.databases):
            self._embedded = EmbeddedPostgres(self.settings.data_dir)
            self.log.info(
                "starting the embedded PostgreSQL under {path}",
                path=self._embedded.data_dir,
            )
            dsns = await threads.deferToThread(self._embedded.start)
            for db in self.databases:
                if db.dsn is None:
                    db.dsn = dsns[DAEMON_DATABASES[db.name]]
        for db in self.databases:
            await db.start()
        # Each database's part of schema.sql is named after it.
        await self._apply_schema_when_reachable([(db, db.name) for db in self.databases])
        if self.customer in self.databases and self.product in self.databases:
            self._sweeper.startService()
        self.log.info("databases ready")
        return None

    async def _apply_schema_when_reachable(self, parts) -> None:
        """Apply schema.sql, waiting (with backoff) for a database that
        cannot be reached yet rather than giving up."""
        delay = 0.5
        for database, part in parts:
            while True:
                try:
                    await schema.apply_schema(database, part)
                    break
                except Exception as e:
                    if not is_unavailable(e) or not self.running:
                        raise
                    if delay == 0.5:
                        # Once: the pool tells the outage and its end.
                        self.log.info(
                            "waiting for the {name} database to apply schema.sql ({error})",
                            name=database.name,
                            error=describe(e),
                        )
                    await task.deferLater(self._clock(), delay, lambda: None)
                    delay = min(delay * 2, 10.0)

    def _clock(self):
        if self.reactor is None:
            from twisted.internet import reactor

            return reactor
        return self.reactor

    def _start_failed(self, failure) -> None:
        self.log.failure("the databases could not be set up; stopping", failure)
        self._settle(failure)
        stop_reactor(self.reactor)

    async def _sweep_once(self) -> None:
        try:
            await sweep_sessions(
                self.customer, self.product, self.settings.session_timeout
            )
        except Exception as e:
            if not is_unavailable(e):
                self.log.failure("session sweep failed; it will run again")

    def _sweep(self) -> defer.Deferred:
        return defer.Deferred.fromCoroutine(self._sweep_once())

    def stopService(self):
        super().stopService()
        return defer.Deferred.fromCoroutine(self._stop())

    async def _stop(self) -> None:
        if self._sweeper.running:
            await defer.maybeDeferred(self._sweeper.stopService)
        await defer.gatherResults([defer.maybeDeferred(db.stopService) for db in self.databases])
        if self._embedded is not None:
            await threads.deferToThread(self._embedded.stop)
            self._embedded = None


class ApiServer(Service):
    """One API service (C{name}) listening on C{endpoint} once the backend is up."""

    log = Logger()

    def __init__(
        self,
        name: str,
        endpoint: IStreamServerEndpoint,
        factory: FrameFactory,
        backend: Backend,
    ) -> None:
        self.name = name
        self.endpoint = endpoint
        self.factory = factory
        self.backend = backend
        self.port = None
        self._listening: Optional[defer.Deferred] = None

    def startService(self):
        super().startService()
        self._listening = defer.Deferred.fromCoroutine(self._listen())
        self._listening.addErrback(self._listen_failed)

    async def _listen(self) -> None:
        await self.backend.ready()
        self.port = await self.endpoint.listen(self.factory)
        self.log.info(
            "{name} service listening on {address}",
            name=self.name,
            address=self.port.getHost(),
        )

    def _listen_failed(self, failure) -> None:
        if self.backend.ready_failed:
            return  # the backend has said why, and stopped the reactor
        self.log.failure("the {name} service cannot listen", failure, name=self.name)
        stop_reactor(self.backend.reactor)

    def stopService(self):
        super().stopService()
        return defer.Deferred.fromCoroutine(self._stop())

    async def _stop(self) -> None:
        if self.port is not None:
            await defer.maybeDeferred(self.port.stopListening)
            self.port = None
        await self.factory.drain()
        self.factory.close_connections()


class PeriodicJob(Service):
    """Runs C{job} (a coroutine function) every C{interval} seconds, the
    first time as soon as the backend is ready; a failed run is logged and
    the job runs again at the next interval."""

    log = Logger()

    def __init__(self, name: str, interval: float, job, backend: Backend) -> None:
        self.name = name
        self.interval = interval
        self.job = job
        self.backend = backend
        self._loop: Optional[task.LoopingCall] = None
        self._started: Optional[defer.Deferred] = None

    def startService(self):
        super().startService()
        self._started = self.backend.ready()
        self._started.addCallbacks(self._start_loop, lambda _: None)

    def _start_loop(self, _) -> None:
        if not self.running:
            return
        self._loop = task.LoopingCall(self._run)
        self._loop.clock = self.backend._clock()
        self._loop.start(self.interval, now=True)

    def _run(self) -> defer.Deferred:
        return defer.Deferred.fromCoroutine(self._run_once())

    async def _run_once(self) -> None:
        try:
            await self.job()
        except Exception as e:
            if is_unavailable(e):
                # The database's outage is in the log already.
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
