"""twistd plugin module of marketplace: every service in one process."""

from marketplace.daemon.build import make_daemon as makeService  # noqa: N813 (twistd's name)
from marketplace.daemon.options import AllOptions


class Options(AllOptions):
    """The daemon's options (their module is what the worker processes
    import again)."""


__all__ = ["Options", "makeService"]
