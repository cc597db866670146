"""Checking payload fields against the limits of PROTOCOL.md (Values).

Each function takes the payload and a field name and returns the field's
value in the form the logic uses, or raises C{BAD_REQUEST} naming the field.
"""

import re
from decimal import Decimal, InvalidOperation
from typing import List, Optional, Tuple

from marketplace.contract.errors import bad_request

INT32_MAX = 2**31 - 1
# numeric(12, 2) in schema.sql
PRICE_MAX = Decimal("9999999999.99")
_CENT = Decimal("0.01")
_ITEM_ID = re.compile(r"([0-9]{1,10})-([0-9]{1,18})")
_MISSING = object()


def _get(payload: dict, name: str, required: bool):
    value = payload.get(name, _MISSING)
    if value is _MISSING or value is None:
        if required:
            raise bad_request(f'field "{name}" is missing')
        return None
    return value


def _check_text(name: str, value: str) -> None:
    if "\x00" in value:
        raise bad_request(f'field "{name}" must not contain NUL characters')
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise bad_request(f'field "{name}" is not valid Unicode text')


def text(
    payload: dict,
    name: str,
    low: int,
    high: int,
    required: bool = True,
    spaces: bool = True,
) -> Optional[str]:
    """A string of C{low} to C{high} characters."""
    value = _get(payload, name, required)
    if value is None:
        return None
    if not isinstance(value, str):
        raise bad_request(f'field "{name}" must be a string')
    if not low <= len(value) <= high:
        raise bad_request(f'field "{name}" must be {low} to {high} characters long')
    _check_text(name, value)
    if not spaces and any(c.isspace() for c in value):
        raise bad_request(f'field "{name}" must not contain white space')
    return value


def integer(
    payload: dict,
    name: str,
    low: int,
    high: int = INT32_MAX,
    default: Optional[int] = None,
) -> int:
    """An integer from C{low} to C{high}; C{default} where it may be left out."""
    value = _get(payload, name, default is None)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int):
        raise bad_request(f'field "{name}" must be an integer')
    if not low <= value <= high:
        raise bad_request(f'field "{name}" must be from {low} to {high}')
    return value


def quantity(payload: dict, name: str = "quantity") -> int:
    """A number of units in a request: at least one."""
    return integer(payload, name, 1)


def price(payload: dict, name: str = "price") -> Decimal:
    """A price: a number from 0 with at most two decimal places."""
    value = _get(payload, name, True)
    if isinstance(value, bool) or not isinstance(value, (int, Decimal)):
        raise bad_request(f'field "{name}" must be a number')
    value = Decimal(value)
    if not value.is_finite() or not 0 <= value <= PRICE_MAX:
        raise bad_request(f'field "{name}" must be from 0 to {PRICE_MAX}')
    try:
        exact = value == value.quantize(_CENT)
    except InvalidOperation:
        exact = False
    if not exact:
        raise bad_request(f'field "{name}" must have at most 2 decimal places')
    return value.quantize(_CENT)


def keywords(payload: dict, name: str = "keywords", required: bool = True) -> List[str]:
    """At most 5 keywords of 1 to 8 characters, lower-cased, without repeats."""
    value = _get(payload, name, required)
    if value is None:
        return []
    if not isinstance(value, list):
        raise bad_request(f'field "{name}" must be a list of strings')
    if len(value) > 5:
        raise bad_request(f'field "{name}" may hold at most 5 keywords')
    result: List[str] = []
    for keyword in value:
        if not isinstance(keyword, str) or not 1 <= len(keyword) <= 8:
            raise bad_request(
                f'field "{name}" must hold strings of 1 to 8 characters'
            )
        _check_text(name, keyword)
        keyword = keyword.lower()
        if keyword not in result:
            result.append(keyword)
    return result


def condition(payload: dict, name: str = "condition") -> str:
    """"new" or "used", in any case; returned in lower case."""
    value = _get(payload, name, True)
    if not isinstance(value, str) or value.lower() not in ("new", "used"):
        raise bad_request(f'field "{name}" must be "new" or "used"')
    return value.lower()


def boolean(payload: dict, name: str) -> bool:
    """true or false."""
    value = _get(payload, name, True)
    if not isinstance(value, bool):
        raise bad_request(f'field "{name}" must be true or false')
    return value


def item_id(payload: dict, name: str = "item_id") -> Tuple[int, int]:
    """An item id "<category>-<number>", as (category, number)."""
    value = _get(payload, name, True)
    match = _ITEM_ID.fullmatch(value) if isinstance(value, str) else None
    if match is None:
        raise bad_request(f'field "{name}" must be an item id such as "3-17"')
    category, number = int(match.group(1)), int(match.group(2))
    if category > INT32_MAX or number > 2**63 - 1:
        raise bad_request(f'field "{name}" is out of range')
    return category, number


def search_cursor(
    payload: dict, name: str = "after"
) -> Optional[Tuple[Decimal, int, Decimal, int]]:
    """A search's keyset cursor: the last item of the previous page as it
    was answered, of which C{score}, C{thumbs_up}, C{thumbs_down}, C{price}
    and C{item_id} are read; as (score, thumbs_down - thumbs_up, price,
    item number), or None when the field is absent."""
    value = _get(payload, name, False)
    if value is None:
        return None
    if not isinstance(value, dict):
        raise bad_request(f'field "{name}" must be an item of the previous page')
    score = value.get("score")
    if isinstance(score, bool) or not isinstance(score, (int, float, Decimal)):
        raise bad_request(f'field "{name}" must have a number "score"')
    score = Decimal(str(score))
    if not score.is_finite():
        raise bad_request(f'field "{name}" must have a finite "score"')
    up = integer(value, "thumbs_up", 0)
    down = integer(value, "thumbs_down", 0)
    _, number = item_id(value)
    return score, down - up, price(value), number


def format_item_id(category: int, number: int) -> str:
    """The wire form of an item id."""
    return f"{category}-{number}"


#: Longest idempotency key of MakePurchase and of the payments service.
IDEMPOTENCY_KEY_MAX = 200


def idempotency_key(payload: dict, required: bool = True) -> Optional[str]:
    """The caller's idempotency key: 1 to 200 characters."""
    return text(payload, "idempotency_key", 1, IDEMPOTENCY_KEY_MAX, required=required)
