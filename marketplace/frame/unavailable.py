"""What counts as "a backend cannot be reached now": the errors for which a
request is answered UNAVAILABLE (never INTERNAL) and a periodic job is
skipped quietly.

The frame knows no database: the layer that talks to one names its errors
here when it is imported (marketplace.postgres.database names psycopg2's
and txpostgres's), before any of them can be raised.
"""

from typing import Tuple

_kinds: Tuple[type, ...] = ()


def count_as_unavailable(*kinds: type) -> None:
    """From now on, an error of one of C{kinds} means "unavailable"."""
    global _kinds
    _kinds += tuple(kind for kind in kinds if kind not in _kinds)


def is_unavailable(error: BaseException) -> bool:
    """Whether C{error} means a backend could not be reached (or gave up
    on the request), so the request may simply be retried."""
    return isinstance(error, _kinds)


__all__ = ["count_as_unavailable", "is_unavailable"]
