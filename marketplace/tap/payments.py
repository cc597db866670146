"""twistd plugin module of marketplace-payments: the financial-transactions
service on its own."""

from marketplace.daemon.build import make_daemon as makeService  # noqa: N813 (twistd's name)
from marketplace.daemon.options import PaymentsOptions


class Options(PaymentsOptions):
    """The daemon's options (their module is what the worker processes
    import again)."""


__all__ = ["Options", "makeService"]
