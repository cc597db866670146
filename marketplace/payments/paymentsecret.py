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
import os
import secrets
from pathlib import Path
from typing import Any

FILE_NAME = "payments.secret"
MIN_LENGTH = 16


def check(secret: str) -> str:
    """A configured secret, or ValueError if it is too short to be one."""
    if len(secret) < MIN_LENGTH:
        raise ValueError(f"the payments secret must be at least {MIN_LENGTH} characters")
    return secret


def load_or_create(folder: Path) -> str:
    """The secret in C{folder}'s secret file, which is created (readable by
    its owner alone) if there is none yet.

    The new file is written under another name and linked into place, so
    daemons starting at once from one folder all end up with the one
    secret that was linked first, and nobody reads a half-written file.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / FILE_NAME
    if not path.exists():
        draft = folder / f".{FILE_NAME}.{os.getpid()}.{secrets.token_hex(4)}"
        descriptor = os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(descriptor, "w") as out:
                out.write(secrets.token_urlsafe(32) + "\n")
            try:
                os.link(draft, path)
            except FileExistsError:
                pass  # another daemon was first: use its secret
        finally:
            os.unlink(draft)
    return check(path.read_text().strip())


def matches(given: Any, secret: str) -> bool:
    """Whether C{given} (from a request) is the secret, in time that does
    not depend on where they differ."""
    if not isinstance(given, str):
        return False
    return hmac.compare_digest(
        given.encode("utf-8", "surrogatepass"), secret.encode("utf-8")
    )
