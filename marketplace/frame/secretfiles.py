"""Secret files (keys, passwords, the payments secret) that are private
from the moment they exist.

A secret file is created with mode 0600 by the call that creates it
(C{os.open} with C{O_CREAT | O_EXCL}), under a draft name, written, and
then linked (or renamed) into place: no one ever sees it with a wider mode
or half-written, and nothing here widens a mode.  One that is there
already is read only if it is a regular file of this process's user that
no one else may read or write (L{check}); otherwise L{UnsafeSecretFile}
says what is wrong and how to mend it.
"""

import os
import secrets
import stat
from pathlib import Path
from typing import Union

#: The mode of every secret file this module creates.
MODE = 0o600


class UnsafeSecretFile(ValueError):
    """A secret file that others may read or write, or that is not this
    user's (its message says which, and what to do)."""


def check(path: Union[str, Path], status: os.stat_result) -> None:
    """Raise L{UnsafeSecretFile} unless C{status} (of C{path}) is that of a
    regular file owned by this process's user, with no rights for others."""
    if not stat.S_ISREG(status.st_mode):
        raise UnsafeSecretFile(f"{path} is not a regular file; a secret file must be one")
    if status.st_uid != os.geteuid():
        raise UnsafeSecretFile(
            f"{path} belongs to uid {status.st_uid}, not to this user (uid {os.geteuid()}):"
            " refusing a secret someone else could have written; remove it (a new one is"
            " made) or run as its owner"
        )
    mode = stat.S_IMODE(status.st_mode)
    if mode & 0o077:
        raise UnsafeSecretFile(
            f"{path} has mode {mode:04o}: others may read or change this secret; treat it as"
            f" leaked, and remove it (a new one is made) or make it private: chmod 600 {path}"
        )


def read(path: Union[str, Path]) -> bytes:
    """The content of the secret file C{path}, once L{check} accepts it
    (checked on the open file, so it cannot be swapped in between)."""
    descriptor = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    with os.fdopen(descriptor, "rb") as f:
        check(path, os.fstat(f.fileno()))
        return f.read()


def _draft(path: Path, data: bytes) -> Path:
    """A new private file beside C{path} holding C{data}."""
    draft = path.parent / f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}"
    descriptor = os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, MODE)
    try:
        with os.fdopen(descriptor, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
    except BaseException:
        draft.unlink(missing_ok=True)
        raise
    return draft


def create(path: Union[str, Path], data: bytes) -> bool:
    """Make the secret file C{path} with C{data} unless it exists; whether
    this call made it.  Of processes racing to make it, one wins and the
    others keep its file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    draft = _draft(path, data)
    try:
        os.link(draft, path)
        return True
    except FileExistsError:
        return False
    finally:
        draft.unlink()


def replace(path: Union[str, Path], data: bytes) -> None:
    """Put a new secret file with C{data} in the place of C{path}, whatever
    was there (the old file is not reused, so its mode cannot leak in)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    draft = _draft(path, data)
    try:
        os.replace(draft, path)
    except BaseException:
        draft.unlink(missing_ok=True)
        raise


def read_or_create(path: Union[str, Path], make) -> bytes:
    """The secret in C{path}, made by calling C{make()} (bytes) and stored
    there first if the file does not exist yet."""
    path = Path(path)
    if not os.path.lexists(path):
        create(path, make())
    return read(path)
