"""The secret the buyer service shows the financial-transactions service.

Every request to the payments service carries it in the envelope's
C{session_id}; the service compares it in constant time and answers
nothing else to a caller without it.  It comes from C{--payments-secret} or
C{MARKETPLACE_PAYMENTS_SECRET}; with neither, the daemons use the file
C{payments.secret} in their data folder, which the first of them to need it
creates, so daemons started from one folder (C{make run}, C{twistd
marketplace}) share it with nothing to configure.
"""

import hmac
import secrets
from pathlib import Path
from typing import Any

from marketplace.frame import secretfiles

FILE_NAME = "payments.secret"
MIN_LENGTH = 16


def check(secret: str) -> str:
    """A configured secret, or ValueError if it is too short to be one."""
    if len(secret) < MIN_LENGTH:
        raise ValueError(f"the payments secret must be at least {MIN_LENGTH} characters")
    return secret


def load_or_create(folder: Path) -> str:
    """The secret in C{folder}'s secret file, which is created (private to
    its owner from the start, marketplace.frame.secretfiles) if there is
    none yet.  Daemons starting at once from one folder all end up with
    the one secret that was made first.  An existing file that others may
    read or change, or that is not this user's, is refused with
    L{secretfiles.UnsafeSecretFile}.
    """
    path = Path(folder) / FILE_NAME
    made = secretfiles.read_or_create(path, lambda: (secrets.token_urlsafe(32) + "\n").encode())
    return check(made.decode("utf-8").strip())


def matches(given: Any, secret: str) -> bool:
    """Whether C{given} (from a request) is the secret, in time that does
    not depend on where they differ."""
    if not isinstance(given, str):
        return False
    return hmac.compare_digest(
        given.encode("utf-8", "surrogatepass"), secret.encode("utf-8")
    )
