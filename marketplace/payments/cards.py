"""Checks of a payment card's form: number, expiry, security code, name.

Plain functions, no network and no clock of their own: the date to check an
expiry against is an argument, so the checks can be tested for any day.
"""

import re
from datetime import date
from typing import Optional, Tuple

_EXPIRY = re.compile(r"(0[1-9]|1[0-2])/([0-9]{2})")
_SECURITY_CODE = re.compile(r"[0-9]{3,4}")
# Spaces and dashes are how people write card numbers; they carry nothing.
_SEPARATORS = re.compile(r"[ -]")
MIN_DIGITS = 12
MAX_DIGITS = 19


def card_digits(number: str) -> Optional[str]:
    """The digits of a card number written with optional spaces or dashes,
    or None if it is not 12 to 19 digits."""
    digits = _SEPARATORS.sub("", number)
    if not (digits.isascii() and digits.isdigit()):
        return None
    if not MIN_DIGITS <= len(digits) <= MAX_DIGITS:
        return None
    return digits


def luhn_valid(digits: str) -> bool:
    """Whether a string of digits passes the Luhn (mod 10) check."""
    if not digits or not (digits.isascii() and digits.isdigit()):
        return False
    total = 0
    for position, char in enumerate(reversed(digits)):
        value = int(char)
        if position % 2 == 1:
            value *= 2
            if value > 9:
                value -= 9
        total += value
    return total % 10 == 0


def parse_expiry(text: str) -> Optional[Tuple[int, int]]:
    """(year, month) of an expiration date written "MM/YY", or None."""
    match = _EXPIRY.fullmatch(text)
    if match is None:
        return None
    return 2000 + int(match.group(2)), int(match.group(1))


def expired(year: int, month: int, today: date) -> bool:
    """Whether a card valid through C{month}/C{year} has expired by C{today}:
    a card is good until the last day of its month."""
    return (year, month) < (today.year, today.month)


def last_four(number: str) -> str:
    """The last four digits of a card number: all of it that may be kept."""
    digits = "".join(c for c in number if c.isascii() and c.isdigit())
    return digits[-4:]


def decline_reason(
    name: str, number: str, expiration: str, security_code: str, today: date
) -> Optional[str]:
    """Why a card is malformed or expired, as a sentence; None if its form is
    good (whether it is then approved is another matter)."""
    if not name.strip():
        return "the cardholder's name is empty"
    digits = card_digits(number)
    if digits is None:
        return f"the card number must be {MIN_DIGITS} to {MAX_DIGITS} digits"
    if not luhn_valid(digits):
        return "the card number is not valid (it fails the Luhn check)"
    expiry = parse_expiry(expiration)
    if expiry is None:
        return 'the expiration date must be written "MM/YY"'
    if expired(*expiry, today):
        return "the card has expired"
    if _SECURITY_CODE.fullmatch(security_code) is None:
        return "the security code must be 3 or 4 digits"
    return None
