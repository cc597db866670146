"""twistd plugin module of marketplace-buyer: the buyer service on its own."""

from marketplace.server.workers import WorkerOptions, with_workers
from marketplace.tap import BuyerOptions, make_buyer_service


class Options(WorkerOptions, BuyerOptions):
    """The daemon's options and C{--workers}."""


def makeService(config: Options, reactor=None):  # noqa: N802 (twistd's name)
    """The buyer service, for a host of its own."""
    return with_workers(config, __name__, make_buyer_service, reactor)


__all__ = ["Options", "makeService"]
