"""What a username and a password may be (PROTOCOL.md, Additions: values).

- A username is compared in its normal form: Unicode NFKC (so full-width
  "Ａdmin" is "Admin"), case-folded (so "ADMIN" is "admin").  White space,
  control, format (zero-width) and private or unassigned characters are
  refused, and so is a mix of scripts with look-alike letters (Latin "a"
  beside Cyrillic "а"), found with confusable-homoglyphs (Unicode's
  confusables data).  One normal form is one account.
- A new password (NIST SP 800-63B) has at least 8 characters after NFKC,
  not counting invisible ones, and is not in the list of 20,000 common
  passwords shipped in marketplace/data (Django's, see its licence there).
"""

import gzip
import unicodedata
from functools import lru_cache
from importlib import resources
from typing import FrozenSet, Optional

from confusable_homoglyphs import confusables

from marketplace.contract.errors import bad_request

USERNAME_MAX = 32
PASSWORD_MIN = 8
PASSWORD_MAX = 128

# Unicode categories a username may not hold: white space, controls, format
# characters (zero-width space, joiners, bidi marks), surrogates, private use
# and unassigned code points.
_REFUSED = {"Zs", "Zl", "Zp", "Cc", "Cf", "Cs", "Co", "Cn"}
# Invisible in a password, so not counted towards its length.
_INVISIBLE = {"Cc", "Cf"}


def fold(text: str) -> str:
    """NFKC, case-folded: the form names are compared in."""
    return unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", text).casefold())


def username_key(username: str) -> Optional[str]:
    """The normal form of C{username}, or None if it may not be a username."""
    key = fold(username)
    if not 1 <= len(key) <= USERNAME_MAX:
        return None
    if any(unicodedata.category(c) in _REFUSED for c in key):
        return None
    if confusables.is_dangerous(key):
        return None
    return key


def new_username(username: str) -> str:
    """The normal form of a new account's username; BAD_REQUEST if it may
    not be one."""
    key = username_key(username)
    if key is None:
        raise bad_request(
            'field "username" must be 1 to 32 characters after normalisation, with no'
            " white space, control or invisible characters, and no letters of"
            " different scripts that look alike"
        )
    return key


def password_form(password: str) -> str:
    """The form a password is hashed in: NFKC."""
    return unicodedata.normalize("NFKC", password)


def new_password(password: str) -> str:
    """The hashed form of a new account's password; BAD_REQUEST if it is
    too short or too common."""
    form = password_form(password)
    visible = sum(1 for c in form if unicodedata.category(c) not in _INVISIBLE)
    if visible < PASSWORD_MIN or not form.strip():
        raise bad_request(
            f'field "password" must have at least {PASSWORD_MIN} characters'
            " (not counting invisible ones)"
        )
    if form.strip().lower() in common_passwords():
        raise bad_request(
            'field "password" is one of the most common passwords; choose another'
        )
    return form


@lru_cache(maxsize=1)
def common_passwords() -> FrozenSet[str]:
    """The common passwords shipped with the marketplace, lower case."""
    data = resources.files("marketplace").joinpath("data", "common-passwords.txt.gz")
    with gzip.open(data.open("rb"), "rt", encoding="utf-8") as f:
        return frozenset(line.strip() for line in f if line.strip())
