"""twistd options and service makers for the marketplace daemons.

C{marketplace-buyer}, C{marketplace-seller} and C{marketplace-payments} (the
financial-transactions service) run one service each, for a host of its own;
C{marketplace} runs every service in one process.  The
modules of this package are what the twistd plugins name.
"""

import sys
from importlib import metadata
from typing import Dict, List, Mapping, Optional, Union

from twisted.application.service import IService
from twisted.internet.endpoints import serverFromString
from twisted.python import usage

import twisted
from marketplace.buyer.apis import BuyerApis
from marketplace.customer.accounts import OPTIONS as ACCOUNT_OPTIONS
from marketplace.customer.accounts import AccountLimits, limits_from_options
from marketplace.customer.passwords import Passwords
from marketplace.observability.health import Readiness
from marketplace.observability.logs import log_json_to
from marketplace.observability.metrics import Metrics
from marketplace.observability.monitor import MonitorServer, monitor_site, worker_description
from marketplace.payments import paymentsecret
from marketplace.payments.apis import PaymentApis
from marketplace.payments.paymentclient import PaymentsClient
from marketplace.seller.apis import SellerApis
from marketplace.server import config, secretfiles
from marketplace.server.limits import OPTIONS as LIMIT_OPTIONS
from marketplace.server.limits import Limits, ensure_file_limit, from_options, listen_descriptions
from marketplace.server.housekeeping import sweep_sessions
from marketplace.server.periodic import PeriodicJob
from marketplace.server.protocol import FrameFactory
from marketplace.server.service import ApiServer, Backend, OrderedMultiService, stop_reactor
from marketplace.server.statements import session_check

# The financial-transactions service's only caller is the buyer service:
# it listens on loopback unless told otherwise.
DEFAULT_LISTEN = {
    "seller": "tcp:8080",
    "buyer": "tcp:8081",
    "payments": "tcp:8082:interface=127.0.0.1",
}

# The secret the buyer service shows the payments service (both sides).
_PAYMENTS_SECRET = [
    ["payments-secret", None, None,
     "Secret the buyer service shows the financial-transactions service, at"
     " least 16 characters (prefer MARKETPLACE_PAYMENTS_SECRET: options show in"
     " ps). Default: the file payments.secret in the data folder, created if"
     " missing."],
]

_ENDPOINT = (
    "a Twisted endpoint description (tcp:PORT, tcp:PORT:interface=ADDR, ssl:…);"
    " give it several times to listen on several endpoints."
)


def _default(setting: str) -> Optional[str]:
    """The default of a setting as --help shows it."""
    value = config.DEFAULTS[setting]
    if isinstance(value, float):
        return f"{value:g}"
    return None if value is None else str(value)


_PAYMENTS_DB = (
    "Payments database (card authorisations): a libpq connection string or URI."
)

_PAYMENTS_OWNER_DB = [
    ["payments-owner-db", None, None,
     "Connection of the role that owns the payments tables, to apply schema.sql"
     " with (see marketplace-db-roles). Default: that of another database with the"
     " same connection, else the payments database's own connection."],
]

# Options of every daemon about watching it (marketplace.observability.monitor, logs.py).
_MONITORING = [
    ["metrics", None, None,
     "Endpoint of the HTTP server of /metrics (Prometheus), /health/live and"
     " /health/ready, e.g. tcp:9100:interface=127.0.0.1. Off by default."
     " With --workers N, worker k serves it on PORT+k."],
    ["log-json", None, None,
     "Log one JSON object per line to this file (- for standard output)"
     " instead of twistd's text log."],
]

# Options of the financial-transactions service.
_PAYMENTS_SERVICE = [
    ["approval-rate", None, _default("approval_rate"),
     "Chance (0 to 1) that a well-formed card is approved."],
]

# Options of the buyer service about reaching it.
_PAYMENTS_CLIENT = [
    ["payments", None, _default("payments"),
     "Client endpoint of the financial-transactions service."],
    ["payments-timeout", None, _default("payments_timeout"),
     "Seconds to wait for the financial-transactions service."],
    ["settle-after", None, _default("settle_after"),
     "Seconds after which a purchase left pending by a daemon that died is settled."],
]


def version() -> str:
    """The marketplace's version, as installed."""
    try:
        return metadata.version("marketplace")
    except metadata.PackageNotFoundError:
        return "(not installed)"


class _DaemonOptions(usage.Options):
    """Options every marketplace daemon takes, and how they are read.

    Each option may also be set in the environment (L{config.variable}),
    which C{environment} stands for (by default the process environment
    over the C{.env} file).  An option's value is None until
    L{postOptions} where it was not given on the command line.
    """

    optParameters = [
        ["data-dir", None, _default("data_dir"), "Folder of the embedded PostgreSQL."],
        ["pool-size", None, _default("pool_size"), "Connections per database pool."],
        ["max-frame", None, _default("max_frame"), "Largest request frame, in bytes."],
    ] + LIMIT_OPTIONS + _MONITORING
    optFlags = [
        ["unsafe-async-commit", None,
         "Answer writes before their commit reaches the disk: faster, but a crash"
         " of PostgreSQL may lose acknowledged writes. Off by default."],
    ]

    longdesc = (
        "Every option may also be set in the environment, or in a .env file in"
        " the working directory, as MARKETPLACE_ and the option's name in capitals"
        " with underscores (MARKETPLACE_WORKERS=2 for --workers=2); an option that"
        " may be given several times takes its values there separated by spaces."
        " The command line wins over the environment, which wins over .env."
    )

    def __init__(self, environment: Optional[Mapping[str, str]] = None) -> None:
        super().__init__()
        self.environment = config.environment() if environment is None else environment
        # None means "not on the command line": the environment or the
        # default (kept in self.defaults, which --help shows) then decide.
        for name in self.defaults:
            self[name] = None

    def opt_version(self) -> None:
        """Display the marketplace's version and exit."""
        print(f"marketplace {version()} (Twisted {twisted.__version__})")
        sys.exit(0)

    def _add_endpoint(self, name: str, description: str) -> None:
        """One more value of the repeatable endpoint option C{name}."""
        if self[name] is None:
            self[name] = []
        self[name].append(description)

    def postOptions(self) -> None:
        settings = {}
        for name, default in self.defaults.items():
            setting = name.replace("-", "_")
            if setting in config.DEFAULTS:
                # config.load looks in the environment itself; a database
                # named there stays out of this dict, and so out of the
                # command lines of --workers processes.
                settings[setting] = self[name]
            elif self[name] is None:
                value = self.environment.get(config.variable(name)) or None
                if value is not None and name.endswith("listen"):
                    value = value.split()
                self[name] = default if value is None else value
        # A flag not given is 0: the environment decides then.
        settings["unsafe_async_commit"] = True if self["unsafe-async-commit"] else None
        try:
            self.settings = config.load(settings, self.environment)
        except ValueError as e:
            raise usage.UsageError(str(e))
        self.limits = from_options(self)
        for name in self.defaults:
            if name.endswith("listen"):
                self[name] = listen_descriptions(self[name])


class _ShopOptions(_DaemonOptions):
    """Options of the daemons that serve accounts (buyer, seller, all-in-one)."""

    optParameters = [
        ["customer-db", None, None,
         "Customer database (accounts, sessions): a libpq connection string"
         " or URI. Default: the product database if one is set, else the"
         " embedded server."],
        ["product-db", None, None,
         "Product database (items, carts, purchases, feedback). Default: the"
         " customer database if one is set, else the embedded server."],
        ["customer-owner-db", None, None,
         "Connection of the role that owns the customer database's tables, to"
         " apply schema.sql with (see marketplace-db-roles). Default: the customer"
         " database's own connection."],
        ["product-owner-db", None, None,
         "Connection of the role that owns the product database's tables."
         " Default: the customer one if both data share a database, else the"
         " product database's own connection."],
        ["session-timeout", None, _default("session_timeout"),
         "Seconds without a request after which a session ends."],
    ] + ACCOUNT_OPTIONS

    def postOptions(self) -> None:
        super().postOptions()
        self.account_limits = limits_from_options(self)


class BuyerOptions(_ShopOptions):
    """Options of marketplace-buyer."""

    optParameters = [
        ["listen", None, DEFAULT_LISTEN["buyer"], "Where to listen: " + _ENDPOINT],
    ] + _PAYMENTS_CLIENT + _PAYMENTS_SECRET

    def opt_listen(self, description: str) -> None:  # help: the row above
        self._add_endpoint("listen", description)


class PaymentsOptions(_DaemonOptions):
    """Options of marketplace-payments, the financial-transactions service."""

    optParameters = [
        ["listen", None, DEFAULT_LISTEN["payments"], "Where to listen: " + _ENDPOINT],
        ["payments-db", None, None,
         _PAYMENTS_DB + " Default: $MARKETPLACE_PRODUCT_DB (or $MARKETPLACE_CUSTOMER_DB)"
         " if set, else the embedded server's payments database."],
    ] + _PAYMENTS_OWNER_DB + _PAYMENTS_SERVICE + _PAYMENTS_SECRET

    def opt_listen(self, description: str) -> None:  # help: the row above
        self._add_endpoint("listen", description)


class SellerOptions(_ShopOptions):
    """Options of marketplace-seller."""

    optParameters = [
        ["listen", None, DEFAULT_LISTEN["seller"], "Where to listen: " + _ENDPOINT],
    ]

    def opt_listen(self, description: str) -> None:  # help: the row above
        self._add_endpoint("listen", description)


class AllOptions(_ShopOptions):
    """Options of marketplace, every service in one process."""

    optParameters = [
        ["seller-listen", None, DEFAULT_LISTEN["seller"],
         "Where the seller service listens: " + _ENDPOINT],
        ["buyer-listen", None, DEFAULT_LISTEN["buyer"],
         "Where the buyer service listens: " + _ENDPOINT],
        ["payments-listen", None, DEFAULT_LISTEN["payments"],
         "Where the financial-transactions service listens: " + _ENDPOINT],
        ["payments-db", None, None,
         _PAYMENTS_DB + " Default: the product database if one is set, else the"
         " embedded server's payments database."],
    ] + _PAYMENTS_OWNER_DB + _PAYMENTS_SERVICE + _PAYMENTS_CLIENT + _PAYMENTS_SECRET

    # The help of each is its row above.
    def opt_seller_listen(self, description: str) -> None:
        self._add_endpoint("seller-listen", description)

    def opt_buyer_listen(self, description: str) -> None:
        self._add_endpoint("buyer-listen", description)

    def opt_payments_listen(self, description: str) -> None:
        self._add_endpoint("payments-listen", description)


def build(
    listen: Dict[str, Union[str, List[str]]],
    settings: config.Settings,
    reactor=None,
    limits: Optional[Limits] = None,
    metrics: Optional[str] = None,
    account_limits: Optional[AccountLimits] = None,
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
    C{limits} default to those of limits.py, C{account_limits} to those of
    accounts.py."""
    if reactor is None:
        from twisted.internet import reactor
    if limits is None:
        limits = Limits(clock=reactor)
    if account_limits is None:
        account_limits = AccountLimits()
    ensure_file_limit(len(listen), limits)
    top = OrderedMultiService()
    databases = {"payments"} if "payments" in listen else set()
    if "buyer" in listen or "seller" in listen:
        databases |= {"customer", "product"}
    backend = Backend(
        settings, reactor, tuple(databases), Passwords(budget=account_limits.budget())
    )
    backend.setServiceParent(top)
    if "customer" in databases:
        _session_sweep(settings, backend, reactor).setServiceParent(top)
    watcher = Metrics() if metrics is not None else None
    servers = []
    jobs = []
    payments = None
    if "buyer" in listen or "payments" in listen:
        secret = settings.payments_secret or paymentsecret.load_or_create(settings.data_dir)
    if "buyer" in listen:
        # Added before the listeners, so it is closed after they drain.
        payments = PaymentsClient(
            settings.payments, reactor, settings.payments_timeout, secret=secret
        )
        payments.setServiceParent(top)
    for name, description in listen.items():
        if name == "payments":
            apis = PaymentApis(backend.payments, secret, settings.approval_rate, reactor)
        elif name == "buyer":
            apis = BuyerApis(
                backend.customer,
                backend.product,
                backend.passwords,
                settings.session_timeout,
                payments=payments,
                clock=reactor,
                account_limits=account_limits,
                sessions=session_check(settings.one_database),
            )
            jobs.append(_purchase_sweep(apis, settings, backend, watcher, reactor))
        else:
            apis = SellerApis(
                backend.customer,
                backend.product,
                backend.passwords,
                settings.session_timeout,
                account_limits,
                sessions=session_check(settings.one_database),
            )
        dispatcher = apis.dispatcher()
        factory = FrameFactory(dispatcher.handle_frame, settings.max_frame, limits)
        if watcher is not None:
            watcher.watch_dispatcher(dispatcher)
            watcher.watch_factory(name, factory)
        for n, one in enumerate(listen_descriptions(description)):
            endpoint = serverFromString(reactor, one)
            # Services of a MultiService need names of their own.
            label = name if n == 0 else f"{name} {n + 1}"
            server = ApiServer(label, endpoint, factory, backend)
            server.setServiceParent(top)
            servers.append(server)
    for job in jobs:
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


def _session_sweep(settings: config.Settings, backend: Backend, reactor) -> PeriodicJob:
    """The job that frees ended sessions, their carts, old login and sign-up
    counts and old request keys (housekeeping.py): once the databases are
    ready, then every C{session_timeout} seconds, at most every minute."""

    def sweep():
        return sweep_sessions(backend.customer, backend.product, settings.session_timeout)

    interval = min(60.0, settings.session_timeout)
    return PeriodicJob("session sweep", interval, sweep, backend.ready, reactor)


def _purchase_sweep(
    apis: BuyerApis, settings: config.Settings, backend: Backend, watcher=None, reactor=None
) -> PeriodicJob:
    """The job that settles purchases left pending: once the databases are
    ready, then every half C{settle_after} (from half a second to 30
    seconds)."""
    interval = min(30.0, max(0.5, settings.settle_after / 2))

    async def sweep() -> int:
        settled = await apis.settle_stale_purchases(settings.settle_after)
        if watcher is not None:
            watcher.swept(settled)
        return settled

    return PeriodicJob("purchase sweep", interval, sweep, backend.ready, reactor)


def _watched(options, listen: dict, reactor=None) -> IService:
    """The daemon serving C{listen} with the metrics and JSON logs that
    C{options} ask for (worker k of C{--workers} on the metrics port + k)."""
    metrics = options.get("metrics")
    if metrics is not None:
        try:
            metrics = worker_description(metrics, getattr(options, "worker_number", 0))
        except ValueError as e:
            raise usage.UsageError(str(e))
    try:
        top = build(
            listen,
            options.settings,
            reactor,
            options.limits,
            metrics,
            account_limits=getattr(options, "account_limits", None),
        )
    except secretfiles.UnsafeSecretFile as e:
        # Before anything runs: one line and exit status 1, no traceback.
        raise SystemExit(f"marketplace: {e}")
    if options.get("log-json") and not getattr(options, "worker", False):
        log_json_to(top, options["log-json"])
    return top


def make_buyer_service(options: BuyerOptions, reactor=None) -> IService:
    """The buyer service on its own."""
    return _watched(options, {"buyer": options["listen"]}, reactor)


def make_payments_service(options: PaymentsOptions, reactor=None) -> IService:
    """The financial-transactions service on its own."""
    return _watched(options, {"payments": options["listen"]}, reactor)


def make_seller_service(options: SellerOptions, reactor=None) -> IService:
    """The seller service on its own."""
    return _watched(options, {"seller": options["listen"]}, reactor)


def make_all_services(options: AllOptions, reactor=None) -> IService:
    """Every service in one process."""
    listen = {
        "payments": options["payments-listen"],
        "seller": options["seller-listen"],
        "buyer": options["buyer-listen"],
    }
    return _watched(options, listen, reactor)
