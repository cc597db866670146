"""twistd plugin module of marketplace-seller: the seller service on its own."""

from marketplace.tap import SellerOptions as Options
from marketplace.tap import make_seller_service


def makeService(config: Options, reactor=None):  # noqa: N802 (twistd's name)
    """The seller service, for a host of its own."""
    return make_seller_service(config, reactor)


__all__ = ["Options", "makeService"]
