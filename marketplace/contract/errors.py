"""The one exception type that carries a PROTOCOL.md error code."""

from typing import Optional

BAD_REQUEST = "BAD_REQUEST"
FRAME_TOO_LARGE = "FRAME_TOO_LARGE"
UNKNOWN_API = "UNKNOWN_API"
NOT_LOGGED_IN = "NOT_LOGGED_IN"
INVALID_SESSION = "INVALID_SESSION"
INVALID_CREDENTIALS = "INVALID_CREDENTIALS"
USERNAME_TAKEN = "USERNAME_TAKEN"
NOT_FOUND = "NOT_FOUND"
FORBIDDEN = "FORBIDDEN"
OUT_OF_STOCK = "OUT_OF_STOCK"
EMPTY_CART = "EMPTY_CART"
PAYMENT_DECLINED = "PAYMENT_DECLINED"
PRICE_CHANGED = "PRICE_CHANGED"
RATE_LIMITED = "RATE_LIMITED"
UNAVAILABLE = "UNAVAILABLE"
INTERNAL = "INTERNAL"

ERROR_CODES = frozenset(
    {
        BAD_REQUEST,
        FRAME_TOO_LARGE,
        UNKNOWN_API,
        NOT_LOGGED_IN,
        INVALID_SESSION,
        INVALID_CREDENTIALS,
        USERNAME_TAKEN,
        NOT_FOUND,
        FORBIDDEN,
        OUT_OF_STOCK,
        EMPTY_CART,
        PAYMENT_DECLINED,
        PRICE_CHANGED,
        RATE_LIMITED,
        UNAVAILABLE,
        INTERNAL,
    }
)


class ApiError(Exception):
    """A request failed with one of the codes of PROTOCOL.md.

    C{message} is a sentence for a person; programs branch on C{code}.
    C{extra} holds fields the error object carries besides those two (the
    current cart of PRICE_CHANGED).
    """

    def __init__(self, code: str, message: str, extra: Optional[dict] = None) -> None:
        if code not in ERROR_CODES:
            raise ValueError(f"unknown error code {code!r}")
        super().__init__(code, message)
        self.code = code
        self.message = message
        self.extra = extra or {}

    def __str__(self) -> str:
        return f"{self.code}: {self.message}"


def bad_request(message: str) -> ApiError:
    """Shorthand for the most common error."""
    return ApiError(BAD_REQUEST, message)
