"""twistd options and service makers for the marketplace daemons.

C{marketplace-buyer} and C{marketplace-seller} run one API service each, for
a host of its own; C{marketplace} runs every service in one process.  The
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
from marketplace.protocol import FrameFactory
from marketplace.seller import SellerApis
from marketplace.service import ApiServer, Backend, OrderedMultiService

DEFAULT_LISTEN = {"seller": "tcp:8080", "buyer": "tcp:8081"}


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
        names = {
            name.replace("-", "_"): self[name]
            for name, *_ in _DatabaseOptions.optParameters
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
    ]


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
    ]


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
    backend = Backend(settings, reactor)
    backend.setServiceParent(top)
    makers = {"buyer": BuyerApis, "seller": SellerApis}
    for name, description in listen.items():
        apis = makers[name](
            backend.customer, backend.product, backend.passwords, settings.session_timeout
        )
        factory = FrameFactory(apis.dispatcher().handle_frame, settings.max_frame, limits)
        for one in listen_descriptions(description):
            endpoint = serverFromString(reactor, one)
            ApiServer(name, endpoint, factory, backend).setServiceParent(top)
    return top


def make_buyer_service(options: BuyerOptions, reactor=None) -> IService:
    """The buyer service on its own."""
    return build({"buyer": options["listen"]}, options.settings, reactor, options.limits)


def make_seller_service(options: SellerOptions, reactor=None) -> IService:
    """The seller service on its own."""
    return build({"seller": options["listen"]}, options.settings, reactor, options.limits)


def make_all_services(options: AllOptions, reactor=None) -> IService:
    """Every service in one process."""
    return build(
        {"seller": options["seller-listen"], "buyer": options["buyer-listen"]},
        options.settings,
        reactor,
        options.limits,
    )
