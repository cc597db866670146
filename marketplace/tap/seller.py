"""twistd plugin module of marketplace-seller: the seller service on its own."""

from marketplace.daemon.build import make_daemon as makeService  # noqa: N813 (twistd's name)
from marketplace.daemon.options import SellerOptions


class Options(SellerOptions):
    """The daemon's options (their module is what the worker processes
    import again)."""


__all__ = ["Options", "makeService"]
