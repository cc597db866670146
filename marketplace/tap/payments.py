"""twistd plugin module of marketplace-payments: the financial-transactions
service on its own."""

from marketplace.tap import PaymentsOptions as Options
from marketplace.tap import make_payments_service


def makeService(config: Options, reactor=None):  # noqa: N802 (twistd's name)
    """The financial-transactions service, for a host of its own."""
    return make_payments_service(config, reactor)


__all__ = ["Options", "makeService"]
