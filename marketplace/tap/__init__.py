"""twistd options and service makers for the marketplace daemons.

C{marketplace-buyer}, C{marketplace-seller} and C{marketplace-payments} (the
financial-transactions service) run one service each, for a host of its own;
C{marketplace} runs every service in one process.  The
modules of this package are what the twistd plugins name.
"""

from typing import Dict, List, Optional, Union

from twisted.application.service import IService
from twisted.internet.endpoints import serverFromString
from twisted.python import usage

from marketplace import config
from marketplace.buyer import BuyerApis
from marketplace.limits import OPTIONS as LIMIT_OPTIONS
from marketplace.limits import Limits, from_options, listen_descriptions, make_repeatable
from marketplace.paymentclient import PaymentsClient
from marketplace.payments import PaymentApis
from marketplace.protocol import FrameFactory
from marketplace.seller import SellerApis
from marketplace.service import ApiServer, Backend, OrderedMultiService, PeriodicJob

DEFAULT_LISTEN = {"seller": "tcp:8080", "buyer": "tcp:8081", "payments": "tcp:8082"}

# Options of the financial-transactions service.
_PAYMENTS_SERVICE = [
    ["payments-db", None, None,
     "Payments database (card authorisations). Default: $MARKETPLACE_PAYMENTS_DB,"
     " else the product database if one is set, else the embedded server."],
    ["approval-rate", None, None,
     "Chance (0 to 1) that a well-formed card is approved."
     " Default: $MARKETPLACE_APPROVAL_RATE, else 0.9"],
]

# Options of the buyer service about reaching it.
_PAYMENTS_CLIENT = [
    ["payments", None, None,
     "Client endpoint of the financial-transactions service."
     " Default: $MARKETPLACE_PAYMENTS, else tcp:host=127.0.0.1:port=8082"],
    ["payments-timeout", None, None,
     "Seconds to wait for the financial-transactions service."
     " Default: $MARKETPLACE_PAYMENTS_TIMEOUT, else 10"],
    ["settle-after", None, None,
     "Seconds after which a purchase left pending by a daemon that died is"
     " settled. Default: $MARKETPLACE_SETTLE_AFTER, else 30"],
]


class _DatabaseOptions(usage.Options):
    """Options every marketplace daemon takes."""

    optParameters = [
        ["customer-db", None, None,
         "Customer database (accounts, sessions): a libpq connection string"
         " or URI. Default: $MARKETPLACE_CUSTOMER_DB, else the embedded server."],
        ["product-db", None, None,
         "Product database (items, carts, purchases, feedback)."
         " Default: $MARKETPLACE_PRODUCT_DB, else the embedded server."],
        ["data-dir", None, None,
         "Folder of the embedded PostgreSQL. Default: $MARKETPLACE_DATA_DIR, else ./var"],
        ["pool-size", None, None,
         "Connections per database pool. Default: $MARKETPLACE_POOL_SIZE, else 4"],
        ["session-timeout", None, None,
         "Seconds without a request after which a session ends."
         " Default: $MARKETPLACE_SESSION_TIMEOUT, else 300"],
        ["max-frame", None, None,
         "Largest request frame in bytes. Default: $MARKETPLACE_MAX_FRAME, else 1048576"],
    ] + LIMIT_OPTIONS

    def __init__(self) -> None:
        super().__init__()
        # Each service may listen on several endpoints at once (TCP and TLS).
        make_repeatable(self, *[n for n in self._dispatch if n.endswith("listen")])

    def postOptions(self) -> None:
        # Every setting this daemon has an option for (subclasses add some).
        names = {
            name: self.get(name.replace("_", "-")) for name in config.ENVIRONMENT
        }
        try:
            self.settings = config.load(names)
        except ValueError as e:
            raise usage.UsageError(str(e))
        self.limits = from_options(self)
        for name in list(self.keys()):
            if name.endswith("listen"):
                self[name] = listen_descriptions(self[name])


class BuyerOptions(_DatabaseOptions):
    """Options of marketplace-buyer."""

    optParameters = [
        ["listen", None, DEFAULT_LISTEN["buyer"],
         "Endpoint description to listen on (tcp:PORT, tcp:PORT:interface=ADDR, ssl:…)."],
    ] + _PAYMENTS_CLIENT


class PaymentsOptions(_DatabaseOptions):
    """Options of marketplace-payments, the financial-transactions service."""

    optParameters = [
        ["listen", None, DEFAULT_LISTEN["payments"],
         "Endpoint description to listen on (tcp:PORT, tcp:PORT:interface=ADDR, ssl:…)."],
    ] + _PAYMENTS_SERVICE


class SellerOptions(_DatabaseOptions):
    """Options of marketplace-seller."""

    optParameters = [
        ["listen", None, DEFAULT_LISTEN["seller"],
         "Endpoint description to listen on (tcp:PORT, tcp:PORT:interface=ADDR, ssl:…)."],
    ]


class AllOptions(_DatabaseOptions):
    """Options of marketplace, every service in one process."""

    optParameters = [
        ["seller-listen", None, DEFAULT_LISTEN["seller"], "Endpoint of the seller service."],
        ["buyer-listen", None, DEFAULT_LISTEN["buyer"], "Endpoint of the buyer service."],
        ["payments-listen", None, DEFAULT_LISTEN["payments"],
         "Endpoint of the financial-transactions service."],
    ] + _PAYMENTS_SERVICE + _PAYMENTS_CLIENT


def build(
    listen: Dict[str, Union[str, List[str]]],
    settings: config.Settings,
    reactor=None,
    limits: Optional[Limits] = None,
) -> OrderedMultiService:
    """The daemon: a backend and, for each entry of C{listen} (a service's
    name and one or more endpoint descriptions), one L{ApiServer} per
    endpoint.  C{limits} default to those of limits.py."""
    if reactor is None:
        from twisted.internet import reactor
    if limits is None:
        limits = Limits(clock=reactor)
    top = OrderedMultiService()
    databases = {"payments"} if "payments" in listen else set()
    if "buyer" in listen or "seller" in listen:
        databases |= {"customer", "product"}
    backend = Backend(settings, reactor, tuple(databases))
    backend.setServiceParent(top)
    jobs = []
    payments = None
    if "buyer" in listen:
        # Added before the listeners, so it is closed after they drain.
        payments = PaymentsClient(settings.payments, reactor, settings.payments_timeout)
        payments.setServiceParent(top)
    for name, description in listen.items():
        if name == "payments":
            apis = PaymentApis(backend.payments, settings.approval_rate, reactor)
        elif name == "buyer":
            apis = BuyerApis(
                backend.customer,
                backend.product,
                backend.passwords,
                settings.session_timeout,
                payments=payments,
                clock=reactor,
            )
            jobs.append(_purchase_sweep(apis, settings, backend))
        else:
            apis = SellerApis(
                backend.customer, backend.product, backend.passwords, settings.session_timeout
            )
        factory = FrameFactory(apis.dispatcher().handle_frame, settings.max_frame, limits)
        for n, one in enumerate(listen_descriptions(description)):
            endpoint = serverFromString(reactor, one)
            # Services of a MultiService need names of their own.
            label = name if n == 0 else f"{name} {n + 1}"
            ApiServer(label, endpoint, factory, backend).setServiceParent(top)
    for job in jobs:
        job.setServiceParent(top)
    return top


def _purchase_sweep(apis: BuyerApis, settings: config.Settings, backend: Backend) -> PeriodicJob:
    """The job that settles purchases left pending: at start, then every
    half C{settle_after} (from half a second to 30 seconds)."""
    interval = min(30.0, max(0.5, settings.settle_after / 2))
    return PeriodicJob(
        "purchase sweep",
        interval,
        lambda: apis.settle_stale_purchases(settings.settle_after),
        backend,
    )


def make_buyer_service(options: BuyerOptions, reactor=None) -> IService:
    """The buyer service on its own."""
    return build({"buyer": options["listen"]}, options.settings, reactor, options.limits)


def make_payments_service(options: PaymentsOptions, reactor=None) -> IService:
    """The financial-transactions service on its own."""
    return build({"payments": options["listen"]}, options.settings, reactor, options.limits)


def make_seller_service(options: SellerOptions, reactor=None) -> IService:
    """The seller service on its own."""
    return build({"seller": options["listen"]}, options.settings, reactor, options.limits)


def make_all_services(options: AllOptions, reactor=None) -> IService:
    """Every service in one process."""
    return build(
        {
            "payments": options["payments-listen"],
            "seller": options["seller-listen"],
            "buyer": options["buyer-listen"],
        },
        options.settings,
        reactor,
        options.limits,
    )
