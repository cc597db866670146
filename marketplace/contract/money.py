"""Money: exact decimals to the cent, and the bound on what one purchase
may come to.

Prices are Decimal from the wire to the database and back (PostgreSQL
C{numeric}); nothing here or elsewhere does float arithmetic on money.
Answers carry every price, subtotal and total twice: as the JSON number of
PROTOCOL.md's first version and as an exact decimal string
(C{price_decimal}, C{subtotal_decimal}, C{total_decimal}).

A cart line (price × units) and a purchase may come to at most
L{TOTAL_MAX}, 9,999,999,999,999.99: fifteen significant digits, so the old
number fields are exact to the cent even in a client that reads them as
binary floating point, and the total fits C{purchases.total} with room to
spare.  Beyond it AddItemToCart and MakePurchase answer BAD_REQUEST before
anything is written.
"""

import re
from decimal import Context, Decimal, Inexact, InvalidOperation
from typing import Any, Iterable, Optional, Tuple

from marketplace.contract.errors import bad_request

CENT = Decimal("0.01")
TOTAL_MAX = Decimal("9999999999999.99")

# Sums and products of money are exact or fail: a rounding would lose cents.
_EXACT = Context(prec=60, traps=[Inexact, InvalidOperation])

# A decimal string as a client may send one: digits, at most two decimals.
_DECIMAL_TEXT = re.compile(r"[0-9]{1,20}(\.[0-9]{1,2})?")


def text(value: Decimal) -> str:
    """The wire's exact form of an amount: a string with two decimals."""
    return f"{value:.2f}"


def line_total(quantity: int, price: Decimal) -> Decimal:
    """What C{quantity} units at C{price} come to, exactly."""
    return _EXACT.multiply(Decimal(quantity), price)


def total(lines: Iterable[Tuple[int, Decimal]]) -> Decimal:
    """The exact sum of (quantity, price) lines."""
    result = Decimal(0)
    for quantity, price in lines:
        result = _EXACT.add(result, line_total(quantity, price))
    return result


def exceeds(amount: Decimal) -> bool:
    """Whether an amount is more than one purchase may charge."""
    return amount > TOTAL_MAX


def amount(
    payload: dict, name: str, high: Decimal = TOTAL_MAX, required: bool = True
) -> Optional[Decimal]:
    """An amount from a request: a JSON number or a decimal string, from 0
    to C{high}, with at most two decimals; None if left out and not
    C{required}."""
    value: Any = payload.get(name)
    if value is None:
        if required:
            raise bad_request(f'field "{name}" is missing')
        return None
    if isinstance(value, str) and _DECIMAL_TEXT.fullmatch(value):
        value = Decimal(value)
    if isinstance(value, bool) or not isinstance(value, (int, Decimal)):
        raise bad_request(f'field "{name}" must be a number or a decimal string')
    value = Decimal(value)
    try:
        exact = value.is_finite() and value == value.quantize(CENT)
    except InvalidOperation:
        exact = False
    if not exact or not 0 <= value <= high:
        raise bad_request(f'field "{name}" must be from 0 to {high}, in cents')
    return value.quantize(CENT)
