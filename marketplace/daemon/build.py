"""How a marketplace daemon is put together: L{make_daemon} is the
C{makeService} of every twistd plugin, and L{build} the tree of services
it runs (tests/support.py builds the same tree).

Each service has one builder (L{_buyer}, L{_seller}, L{_payments}) that
makes its APIs and the periodic jobs it needs; L{build} adds the backend,
a listener per endpoint, the metrics server and, in the process twistd
started, the worker processes of C{--workers}.
"""

from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Union

from twisted.application.service import IService
from twisted.internet.endpoints import serverFromString
from twisted.python import usage

from marketplace.buyer.apis import BuyerApis
from marketplace.buyer.paymentclient import PaymentsClient
from marketplace.customer.accounts import AccountLimits
from marketplace.customer.passwords import Passwords
from marketplace.daemon import exits
from marketplace.daemon.config import Settings
from marketplace.daemon.housekeeping import sweep_sessions
from marketplace.daemon.options import DaemonOptions
from marketplace.daemon.ready import ReadyNotice
from marketplace.daemon.service import ApiServer, Backend, OrderedMultiService, stop_reactor
from marketplace.daemon.workers import WorkerMonitor
from marketplace.frame import secretfiles
from marketplace.frame.reuseport import shared_descriptions
from marketplace.frame.limits import Limits, ensure_file_limit, listen_descriptions
from marketplace.frame.periodic import PeriodicJob
from marketplace.frame.protocol import FrameFactory
from marketplace.observability.health import Readiness
from marketplace.observability.logs import log_json_to
from marketplace.observability.metrics import Metrics
from marketplace.observability.monitor import MonitorServer, monitor_site, worker_description
from marketplace.payments import paymentsecret
from marketplace.payments.apis import PaymentApis
from marketplace.seller.apis import SellerApis
from marketplace.product.statements import session_check


def make_daemon(options: DaemonOptions, reactor=None) -> IService:
    """The daemon that parsed C{options} ask for: the services of
    C{options.listen()}, on ports shared by C{--workers} processes when
    there are several, with the metrics and JSON logs asked for."""
    if reactor is None:
        from twisted.internet import reactor
    settings = options.settings
    worker = options.worker_number
    if worker == 0:
        exits.install(reactor)
    listen = options.listen()
    if settings.workers > 1 or worker > 0:
        try:
            listen = {
                name: shared_descriptions(descriptions, first=worker == 0)
                for name, descriptions in listen.items()
            }
        except ValueError as e:
            raise usage.UsageError(str(e))
    metrics = options["metrics"]
    if metrics is not None:
        try:
            metrics = worker_description(metrics, worker)
        except ValueError as e:
            raise usage.UsageError(str(e))
    try:
        top = build(listen, settings, reactor, metrics=metrics)
    except secretfiles.UnsafeSecretFile as e:
        # Before anything runs: one line and exit status 1, no traceback.
        raise SystemExit(f"marketplace: {e}")
    if worker == 0:
        workers = None
        if settings.workers > 1:
            workers = WorkerMonitor.of(top, options, reactor)
            workers.setServiceParent(top)
        _ready_notice(top, settings.workers, metrics, workers).setServiceParent(top)
        if options["log-json"]:
            log_json_to(top, options["log-json"])
    return top


def _ready_notice(top, count: int, metrics: Optional[str], workers) -> ReadyNotice:
    """The ready line of worker 0, once it and its C{workers} (a
    L{WorkerMonitor}, or None) serve."""
    monitor = next((child for child in top if isinstance(child, MonitorServer)), None)
    return ReadyNotice(
        [child for child in top if isinstance(child, ApiServer)],
        monitor,
        workers=count,
        # A port 0 gives each worker's metrics a port of its own choosing.
        same_metrics_ports=(
            count > 1 and metrics is not None and worker_description(metrics, 1) != metrics
        ),
        workers_serving=None if workers is None else workers.all_serving(),
    )


@dataclass
class _Context:
    """What the service builders share: the backend, the settings, the
    limits of accounts, the metrics (if watched) and the clock."""

    backend: Backend
    settings: Settings
    account_limits: AccountLimits
    watcher: Optional[Metrics]
    reactor: object
    secret: Optional[str] = None
    #: Services to add after the listeners (they stop before them).
    jobs: List[IService] = field(default_factory=list)


def _buyer(context: _Context, top: OrderedMultiService) -> BuyerApis:
    """The buyer service's APIs, its client of the payments service and its
    purchase sweep."""
    settings, backend = context.settings, context.backend
    payments = PaymentsClient(
        settings.payments, context.reactor, settings.payments_timeout, secret=context.secret
    )
    payments.setServiceParent(top)
    apis = BuyerApis(
        backend.customer,
        backend.product,
        backend.passwords,
        settings.session_timeout,
        payments=payments,
        clock=context.reactor,
        account_limits=context.account_limits,
        sessions=session_check(settings.one_database),
    )
    context.jobs.append(_purchase_sweep(apis, context))
    return apis


def _seller(context: _Context, top: OrderedMultiService) -> SellerApis:
    """The seller service's APIs."""
    settings, backend = context.settings, context.backend
    return SellerApis(
        backend.customer,
        backend.product,
        backend.passwords,
        settings.session_timeout,
        context.account_limits,
        sessions=session_check(settings.one_database),
        clock=context.reactor,
    )


def _payments(context: _Context, top: OrderedMultiService) -> PaymentApis:
    """The financial-transactions service's APIs."""
    return PaymentApis(
        context.backend.payments, context.secret, context.settings.approval_rate, context.reactor
    )


#: The builder of each service, and the databases it needs.
BUILDERS: Dict[str, Callable] = {"buyer": _buyer, "seller": _seller, "payments": _payments}
DATABASES = {
    "buyer": {"customer", "product"},
    "seller": {"customer", "product"},
    "payments": {"payments"},
}


def build(
    listen: Dict[str, Union[str, List[str]]],
    settings: Settings,
    reactor=None,
    limits: Optional[Limits] = None,
    metrics: Optional[str] = None,
    account_limits: Optional[AccountLimits] = None,
    passwords: Optional[Passwords] = None,
) -> OrderedMultiService:
    """The daemon serving C{listen} (each service's name and one or more
    endpoint descriptions): a tree of services, in this order,

      - the L{Backend}: the embedded PostgreSQL if one is needed, a pool
        per database, the schema (started one after the other);
      - the session sweep (buyer and seller services);
      - the client of the financial-transactions service (buyer service);
      - an L{ApiServer} per service and endpoint, listening once the
        backend is ready;
      - the purchase sweep (buyer service);
      - with C{metrics} (an endpoint description), the L{MonitorServer} of
        the metrics and health checks, listening at once.

    They stop in the reverse order, each once the one after it has
    stopped: the listeners drain before the sweeps end and the pools close.
    C{limits} and C{account_limits} default to those of C{settings},
    C{passwords} to argon2id within C{account_limits}' hashing budget."""
    if reactor is None:
        from twisted.internet import reactor
    limits = settings.limits if limits is None else limits
    account_limits = settings.accounts if account_limits is None else account_limits
    ensure_file_limit(len(listen), limits)
    top = OrderedMultiService()
    databases = set().union(*(DATABASES[name] for name in listen))
    backend = Backend(
        settings,
        reactor,
        tuple(databases),
        passwords or account_limits.passwords(),
    )
    backend.setServiceParent(top)
    if "customer" in databases:
        _session_sweep(settings, backend, reactor).setServiceParent(top)
    watcher = Metrics() if metrics is not None else None
    context = _Context(backend, settings, account_limits, watcher, reactor)
    if "buyer" in listen or "payments" in listen:
        context.secret = settings.payments_secret or paymentsecret.load_or_create(
            settings.data_dir
        )
    # Every service's APIs first: what they add (the payments client) is
    # then added before the listeners, and so closed after they drain.
    dispatchers = {name: BUILDERS[name](context, top).dispatcher() for name in listen}
    servers = []
    for name, descriptions in listen.items():
        dispatcher = dispatchers[name]
        factory = FrameFactory(dispatcher.handle_frame, settings.max_frame, limits)
        if watcher is not None:
            watcher.watch_dispatcher(dispatcher)
            watcher.watch_factory(name, factory)
        for n, description in enumerate(listen_descriptions(descriptions)):
            endpoint = serverFromString(reactor, description)
            # Services of a MultiService need names of their own.
            label = name if n == 0 else f"{name} {n + 1}"
            server = ApiServer(label, endpoint, factory, backend, service=name)
            server.setServiceParent(top)
            servers.append(server)
    for job in context.jobs:
        job.setServiceParent(top)
    if watcher is not None:
        _monitor(metrics, watcher, limits, backend, servers, reactor).setServiceParent(top)
    return top


def _monitor(description, watcher, limits, backend, servers, reactor) -> MonitorServer:
    """The HTTP server of the metrics and health checks."""
    watcher.watch_limits(limits)
    for database in backend.databases:
        watcher.watch_database(database)
    readiness = Readiness(servers, backend.databases, reactor)
    site = monitor_site(watcher, readiness, reactor)
    return MonitorServer(description, site, reactor, lambda: stop_reactor(reactor))


def _session_sweep(settings: Settings, backend: Backend, reactor) -> PeriodicJob:
    """The job that frees ended sessions, their carts, old login and sign-up
    counts and old request keys (housekeeping.py): once the databases are
    ready, then every C{session_timeout} seconds, at most every minute."""

    def sweep():
        return sweep_sessions(backend.customer, backend.product, settings.session_timeout)

    interval = min(60.0, settings.session_timeout)
    return PeriodicJob("session sweep", interval, sweep, reactor, after=backend.ready)


def _purchase_sweep(apis: BuyerApis, context: _Context) -> PeriodicJob:
    """The job that settles purchases left pending: once the databases are
    ready, then every half C{settle_after} (from half a second to 30
    seconds)."""
    settle_after = context.settings.settle_after
    interval = min(30.0, max(0.5, settle_after / 2))
    watcher = context.watcher

    async def sweep() -> int:
        settled = await apis.settle_stale_purchases(settle_after)
        if watcher is not None:
            watcher.swept(settled)
        return settled

    return PeriodicJob(
        "purchase sweep", interval, sweep, context.reactor, after=context.backend.ready
    )
