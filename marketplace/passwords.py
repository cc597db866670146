"""Password hashing with argon2id, done in a thread so the reactor never waits."""

from typing import Optional

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from twisted.internet import threads


class Passwords:
    """Hashes and verifies passwords off the reactor thread.

    L{verify} with C{None} for the stored hash still does the work of a
    real verification, so the time a failed login takes does not tell
    whether the username exists.
    """

    def __init__(self, hasher: Optional[PasswordHasher] = None) -> None:
        self._hasher = hasher or PasswordHasher()
        self._decoy: Optional[str] = None

    def hash(self, password: str) -> "threads.Deferred[str]":
        """The argon2id hash of C{password}."""
        return threads.deferToThread(self._hasher.hash, password)

    def verify(self, stored: Optional[str], password: str) -> "threads.Deferred[bool]":
        """Whether C{password} matches the C{stored} hash (None: no account)."""
        return threads.deferToThread(self._verify, stored, password)

    def _verify(self, stored: Optional[str], password: str) -> bool:
        if stored is None:
            if self._decoy is None:
                self._decoy = self._hasher.hash("a decoy: no account has it")
            self._check(self._decoy, password)
            return False
        return self._check(stored, password)

    def _check(self, stored: str, password: str) -> bool:
        try:
            return self._hasher.verify(stored, password)
        except (VerificationError, InvalidHashError):
            return False
