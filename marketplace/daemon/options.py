"""The twistd options of the marketplace daemons.

C{marketplace-buyer}, C{marketplace-seller} and C{marketplace-payments} (the
financial-transactions service) run one service each, for a host of its own;
C{marketplace} runs every service in one process.  Each option may also be
set in the environment or a C{.env} file; L{DaemonOptions.postOptions}
reads them all, once, into one L{config.Settings}.
"""

import sys
from importlib import metadata
from typing import Dict, List, Mapping, Optional

from twisted.python import usage

import twisted
from marketplace.customer.accounts import OPTIONS as ACCOUNT_OPTIONS
from marketplace.daemon import config
from marketplace.frame.limits import OPTIONS as LIMIT_OPTIONS
from marketplace.frame.limits import listen_descriptions

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
_PAYMENTS_OWNER_DB = [
    ["payments-owner-db", None, None,
     "Connection of the role that owns the payments tables, to apply schema.sql"
     " with (see marketplace-db-roles). Default: that of another database with the"
     " same connection, else the payments database's own connection."],
]

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


def _repeatable(name: str):
    """The C{opt_} method of an option that may be given several times:
    each value is added to a list (its help is its row of optParameters)."""

    def add(self, description: str) -> None:
        if self[name] is None:
            self[name] = []
        self[name].append(description)

    return add


class DaemonOptions(usage.Options):
    """Options every marketplace daemon takes, and how they are read.

    Each option may also be set in the environment (L{config.variable}),
    which C{environment} stands for (by default the process environment
    over the C{.env} file).  An option's value is None until
    L{postOptions} where it was not given on the command line.

    C{services} names the services the daemon runs, each with the option
    that says where it listens.
    """

    services: Dict[str, str] = {}

    optParameters = [
        ["data-dir", None, _default("data_dir"), "Folder of the embedded PostgreSQL."],
        ["pool-size", None, _default("pool_size"), "Connections per database pool."],
        ["max-frame", None, _default("max_frame"), "Largest request frame, in bytes."],
        ["workers", None, _default("workers"),
         "Processes serving each service's ports (SO_REUSEPORT); use one per"
         " core. Needs tcp: or ssl: endpoints."],
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

    #: The number of this process among the daemon's --workers (0: the one
    #: twistd started); the worker processes set it (marketplace.daemon.workers).
    worker_number = 0

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
            self.settings = config.load(settings, self.environment, limits=self)
        except ValueError as e:
            raise usage.UsageError(str(e))
        for name in self.defaults:
            if name.endswith("listen"):
                self[name] = listen_descriptions(self[name])

    def listen(self) -> Dict[str, List[str]]:
        """Each service of the daemon and the endpoint descriptions it
        listens on."""
        return {service: self[option] for service, option in self.services.items()}


class _ShopOptions(DaemonOptions):
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


class BuyerOptions(_ShopOptions):
    """Options of marketplace-buyer."""

    services = {"buyer": "listen"}
    optParameters = [
        ["listen", None, DEFAULT_LISTEN["buyer"], "Where to listen: " + _ENDPOINT],
    ] + _PAYMENTS_CLIENT + _PAYMENTS_SECRET
    opt_listen = _repeatable("listen")


class PaymentsOptions(DaemonOptions):
    """Options of marketplace-payments, the financial-transactions service."""

    services = {"payments": "listen"}
    optParameters = [
        ["listen", None, DEFAULT_LISTEN["payments"], "Where to listen: " + _ENDPOINT],
        ["payments-db", None, None,
         _PAYMENTS_DB + " Default: $MARKETPLACE_PRODUCT_DB (or $MARKETPLACE_CUSTOMER_DB)"
         " if set, else the embedded server's payments database."],
    ] + _PAYMENTS_OWNER_DB + _PAYMENTS_SERVICE + _PAYMENTS_SECRET
    opt_listen = _repeatable("listen")


class SellerOptions(_ShopOptions):
    """Options of marketplace-seller."""

    services = {"seller": "listen"}
    optParameters = [
        ["listen", None, DEFAULT_LISTEN["seller"], "Where to listen: " + _ENDPOINT],
    ]
    opt_listen = _repeatable("listen")


class AllOptions(_ShopOptions):
    """Options of marketplace, every service in one process."""

    services = {"payments": "payments-listen", "seller": "seller-listen", "buyer": "buyer-listen"}
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
    opt_seller_listen = _repeatable("seller-listen")
    opt_buyer_listen = _repeatable("buyer-listen")
    opt_payments_listen = _repeatable("payments-listen")
