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
from twisted.internet.error import CannotListenError
from twisted.internet.interfaces import IStreamServerEndpoint
from twisted.logger import Logger

from marketplace.customer.passwords import Passwords
from marketplace.postgres import schema
from marketplace.postgres.database import Database, is_unavailable
from marketplace.postgres.embedded import DAEMON_DATABASES, EmbeddedPostgres
from marketplace.postgres.outage import describe
from marketplace.server import exits
from marketplace.server.config import Settings
from marketplace.server.deferreds import when_fired
from marketplace.server.housekeeping import sweep_sessions
from marketplace.server.protocol import FrameFactory

#: Seconds between two looks at the embedded server's process.
WATCH_INTERVAL = 1.0


def stop_reactor(reactor=None) -> None:
    """Stop a daemon that cannot serve (exit status 1); the caller has
    logged why."""
    exits.fail(_reactor_of(reactor), None)


def _reactor_of(reactor):
    if reactor is None:
        from twisted.internet import reactor
    return reactor


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
        self._watch: Optional[task.LoopingCall] = None
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
            self._watch = task.LoopingCall(self._keep_embedded)
            self._watch.clock = self._clock()
            self._watch.start(WATCH_INTERVAL, now=False)
        for db in self.databases:
            await db.start()
        # Each database's part of schema.sql is named after it.
        await self._apply_schema_when_reachable([(db, db.name) for db in self.databases])
        if self.customer in self.databases and self.product in self.databases:
            self._sweeper.startService()
        self.log.info("databases ready")
        return None

    def _keep_embedded(self) -> Optional[defer.Deferred]:
        embedded = self._embedded
        if embedded is None or embedded.is_running() or not self.running:
            return None
        return defer.Deferred.fromCoroutine(self._restart_embedded(embedded))

    async def _restart_embedded(self, embedded: EmbeddedPostgres) -> None:
        """Start the embedded server again, with backoff, until it runs;
        meanwhile the pools answer UNAVAILABLE and reconnect by themselves
        once it is back (PostgreSQL recovers from its write-ahead log)."""
        clock = self._clock()
        began = clock.seconds()
        self.log.warn(
            "the embedded PostgreSQL (pid {pid}) has stopped; starting it again",
            pid=embedded.pid(),
        )
        delay = 0.5
        said = None
        while self.running and self._embedded is embedded:
            try:
                await threads.deferToThread(embedded.restart)
            except Exception as e:
                if str(e) != said:  # once per distinct reason
                    said = str(e)
                    self.log.warn(
                        "the embedded PostgreSQL cannot start yet ({error}); trying again",
                        error=said,
                    )
                await task.deferLater(clock, delay, lambda: None)
                delay = min(delay * 2, 5.0)
                continue
            self.log.info(
                "the embedded PostgreSQL runs again (pid {pid}), {seconds:.1f} s after it stopped",
                pid=embedded.pid(),
                seconds=clock.seconds() - began,
            )
            return

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
        self.log.failure("the databases could not be set up", failure)
        self._settle(failure)
        exits.fail(
            _reactor_of(self.reactor),
            "the databases could not be set up ({error}); stopping",
            error=failure.getErrorMessage(),
        )

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
        watch, self._watch = self._watch, None
        if watch is not None and watch.running:
            stopped = watch.deferred
            watch.stop()
            await stopped  # a restart under way ends first
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

    def listening(self) -> defer.Deferred:
        """A Deferred that fires once this service listens, or fails if it
        cannot."""

        def check(_):
            if self.port is None:
                raise CannotListenError(None, None, f"the {self.name} service does not listen")

        return when_fired(self._listening).addCallback(check)

    def _listen_failed(self, failure) -> None:
        if self.backend.ready_failed:
            return None  # the backend has said why, and stopped the daemon
        if failure.check(CannotListenError):
            # A port in use, an address not on this host: words suffice.
            exits.fail(
                _reactor_of(self.backend.reactor),
                "the {name} service cannot listen: {error}; stopping",
                name=self.name,
                error=failure.getErrorMessage().rstrip("."),
            )
        else:
            self.log.failure("the {name} service cannot listen", failure, name=self.name)
            exits.fail(_reactor_of(self.backend.reactor), None)

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
