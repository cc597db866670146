"""twistd plugin module of marketplace-payments: the financial-transactions
service on its own."""

from marketplace.server.workers import WorkerOptions, with_workers
from marketplace.tap import PaymentsOptions, make_payments_service


class Options(WorkerOptions, PaymentsOptions):
    """The daemon's options and C{--workers}."""


def makeService(config: Options, reactor=None):  # noqa: N802 (twistd's name)
    """The financial-transactions service, for a host of its own."""
    return with_workers(config, __name__, make_payments_service, reactor)


__all__ = ["Options", "makeService"]
