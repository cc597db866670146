"""The one exception every client call fails with."""

from typing import Optional

from marketplace.contract.errors import ApiError


class ClientError(ApiError):
    """A request failed: the server's error answer, or UNAVAILABLE when the
    service could not be reached or the connection was lost.

    C{code} is a PROTOCOL.md error code (a newer server may send codes this
    version does not know, so any string is kept); C{message} is a sentence
    for a person; C{api} names the API that was called; C{extra} holds the
    error object's other fields (PRICE_CHANGED's C{cart}).
    """

    def __init__(
        self, code: str, message: str, api: str = "", extra: Optional[dict] = None
    ) -> None:
        # ApiError checks the code against the codes it knows; a client must
        # not break on a code a newer server adds, so that check is skipped.
        Exception.__init__(self, code, message)
        self.code = code
        self.message = message
        self.api = api
        self.extra = extra or {}


__all__ = ["ClientError"]
