"""twistd plugin module of marketplace-buyer: the buyer service on its own."""

from marketplace.tap import BuyerOptions as Options
from marketplace.tap import make_buyer_service


def makeService(config: Options, reactor=None):  # noqa: N802 (twistd's name)
    """The buyer service, for a host of its own."""
    return make_buyer_service(config, reactor)


__all__ = ["Options", "makeService"]
