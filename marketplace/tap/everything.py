"""twistd plugin module of marketplace: every service in one process."""

from marketplace.server.workers import WorkerOptions, with_workers
from marketplace.tap import AllOptions, make_all_services


class Options(WorkerOptions, AllOptions):
    """The daemon's options and C{--workers}."""


def makeService(config: Options, reactor=None):  # noqa: N802 (twistd's name)
    """Every marketplace service in one process, for one machine."""
    return with_workers(config, __name__, make_all_services, reactor)


__all__ = ["Options", "makeService"]
