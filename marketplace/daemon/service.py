"""The services a marketplace daemon is made of.

L{Backend} holds the databases: the embedded server if there is one, a
pool per database and the schema, services of their own started in that
order; L{ApiServer} listens for one API service once the backend is ready.
L{OrderedMultiService} stops its children one after the other, last added
first, so listeners are closed and drained before the pools go.  The
periodic jobs are L{marketplace.frame.periodic.PeriodicJob}s, and
L{marketplace.daemon.build.build} puts the tree together.
"""

from typing import Optional

from twisted.application.service import MultiService, Service
from twisted.internet import defer
from twisted.internet.error import CannotListenError
from twisted.internet.interfaces import IStreamServerEndpoint
from twisted.logger import Logger

from marketplace.customer.passwords import Passwords
from marketplace.postgres.database import Database
from marketplace.postgres.embedded import EmbeddedServer
from marketplace.postgres.schema import Schema
from marketplace.daemon import exits
from marketplace.daemon.config import Settings
from marketplace.frame.deferreds import when_fired
from marketplace.frame.protocol import FrameFactory


def stop_reactor(reactor) -> None:
    """Stop a daemon that cannot serve (exit status 1); the caller has
    logged why."""
    exits.fail(reactor, None)


class OrderedMultiService(MultiService):
    """A MultiService that stops one child at a time, in reverse order."""

    def stopService(self):
        Service.stopService(self)
        return defer.Deferred.fromCoroutine(self._stop_children())

    async def _stop_children(self) -> None:
        for child in reversed(list(self)):
            await defer.maybeDeferred(child.stopService)


class Backend(OrderedMultiService):
    """The databases of one daemon: of customer, product and payments, those
    named in C{databases}.

    Its services start one after the other, each once the one before is up
    (once the Deferred its C{startService} returns has fired), and stop in
    reverse order:

      1. L{EmbeddedServer}, when one of the databases has no connection
         string: it starts the embedded PostgreSQL and hands them theirs;
      2. each L{Database}: it opens its pool;
      3. L{Schema}: it applies schema.sql.

    L{ready} fires then.  If one of them cannot start, the daemon cannot
    serve, so the reactor is stopped (exit status 1).
    """

    log = Logger()

    def __init__(
        self,
        settings: Settings,
        reactor,
        databases=("customer", "product"),
        passwords: Optional[Passwords] = None,
    ) -> None:
        super().__init__()
        self.settings = settings
        self.reactor = reactor
        durable = not settings.unsafe_async_commit
        # Sessions, accounts and the catalog are read on the standbys too,
        # where there are any (docs/RELIABILITY.md, Reads on the replicas).
        self.customer = Database(
            "customer", settings.customer_db, settings.pool_size, reactor, durable,
            settings.customer_owner_db, replicas=True,
        )
        self.product = Database(
            "product", settings.product_db, settings.pool_size, reactor, durable,
            settings.product_owner_db, replicas=True,
        )
        self.payments = Database(
            "payments", settings.payments_db, settings.pool_size, reactor, durable,
            settings.payments_owner_db,
        )
        self.databases = [
            db for db in (self.customer, self.product, self.payments) if db.name in databases
        ]
        self.passwords = passwords or Passwords()
        self.embedded: Optional[EmbeddedServer] = None
        served = [db for db in self.databases if db.dsn is None]
        if served:
            self.embedded = EmbeddedServer(settings.data_dir, served, reactor)
            self.embedded.setServiceParent(self)
        for db in self.databases:
            db.setServiceParent(self)
        Schema(self.databases, reactor).setServiceParent(self)
        self._waiters: list = []
        self._outcome = None

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
        Service.startService(self)  # the children one by one, below
        d = defer.Deferred.fromCoroutine(self._start_in_order())
        d.addCallbacks(lambda _: self._settle(True), self._start_failed)

    async def _start_in_order(self) -> None:
        for child in self:
            if not self.running:
                raise defer.CancelledError("the daemon stopped before its databases were ready")
            await defer.maybeDeferred(child.startService)
        self.log.info("databases ready")

    def _start_failed(self, failure) -> None:
        # Stopped while starting (waiting for a database, say) is no fault.
        if self.running:
            self.log.failure("the databases could not be set up", failure)
            exits.fail(
                self.reactor,
                "the databases could not be set up ({error}); stopping",
                error=failure.getErrorMessage(),
            )
        self._settle(failure)


class ApiServer(Service):
    """One API service listening on C{endpoint} once the backend is up:
    C{name} is this listener's (unique in the tree), C{service} the
    service's (C{name} by default)."""

    log = Logger()

    def __init__(
        self,
        name: str,
        endpoint: IStreamServerEndpoint,
        factory: FrameFactory,
        backend: Backend,
        service: Optional[str] = None,
    ) -> None:
        self.name = name
        self.service = service or name
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
                self.backend.reactor,
                "the {name} service cannot listen: {error}; stopping",
                name=self.name,
                error=failure.getErrorMessage().rstrip("."),
            )
        else:
            self.log.failure("the {name} service cannot listen", failure, name=self.name)
            exits.fail(self.backend.reactor, None)

    def stopService(self):
        super().stopService()
        return defer.Deferred.fromCoroutine(self._stop())

    async def _stop(self) -> None:
        if self.port is not None:
            await defer.maybeDeferred(self.port.stopListening)
            self.port = None
        await self.factory.drain()
        self.factory.close_connections()
