"""twistd plugin module of marketplace-seller: the seller service on its own."""

from marketplace.server.workers import WorkerOptions, with_workers
from marketplace.tap import SellerOptions, make_seller_service


class Options(WorkerOptions, SellerOptions):
    """The daemon's options and C{--workers}."""


def makeService(config: Options, reactor=None):  # noqa: N802 (twistd's name)
    """The seller service, for a host of its own."""
    return with_workers(config, __name__, make_seller_service, reactor)


__all__ = ["Options", "makeService"]
