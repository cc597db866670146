"""twistd plugin module of marketplace: every service in one process."""

from marketplace.tap import AllOptions as Options
from marketplace.tap import make_all_services


def makeService(config: Options, reactor=None):  # noqa: N802 (twistd's name)
    """Every marketplace service in one process, for one machine."""
    return make_all_services(config, reactor)


__all__ = ["Options", "makeService"]
