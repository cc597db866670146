"""Decoding request frames and encoding answer frames (PROTOCOL.md, Envelope).

Nothing here touches a socket: a frame is bytes in, a dict out, and back.
"""

import json
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any, Optional

from marketplace.contract.errors import BAD_REQUEST, ApiError, bad_request


@dataclass
class Request:
    """One decoded request envelope."""

    api: str
    session_id: Optional[str]
    payload: dict
    request_id: Any = None
    has_request_id: bool = False
    #: The client's key for a write (PROTOCOL.md, Request keys), or None.
    request_key: Optional[str] = None


#: The longest request_key.
REQUEST_KEY_MAX = 64


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


_DECODER = json.JSONDecoder(parse_float=Decimal, parse_constant=_reject_constant)


def decode_json(frame: bytes) -> Any:
    """Parse one frame as UTF-8 JSON; numbers with a fraction become Decimal.

    Raises L{ApiError} C{BAD_REQUEST} for anything that is not valid JSON.
    """
    try:
        text = frame.decode("utf-8")
    except UnicodeDecodeError:
        raise bad_request("the frame is not UTF-8")
    try:
        return _DECODER.decode(text)
    except RecursionError:
        raise bad_request("the JSON is nested too deeply")
    except ValueError as e:
        # JSONDecodeError, and also integers too long to convert.
        raise bad_request(f"the frame is not valid JSON ({e})")


def parse_request(frame: bytes) -> Request:
    """Decode a frame into a L{Request}, or raise L{ApiError}.

    When the envelope is malformed the error is raised with the attributes
    C{api} and C{request_id} set from whatever could be read, so the error
    answer can still echo them.
    """
    message = decode_json(frame)
    if not isinstance(message, dict):
        raise bad_request("the frame must hold a JSON object")
    api = message.get("api")
    partial = Request(
        api=api if isinstance(api, str) else None,
        session_id=None,
        payload={},
        request_id=message.get("request_id"),
        has_request_id="request_id" in message,
    )
    try:
        if partial.has_request_id and not _echoable(partial.request_id):
            partial.request_id = None
            partial.has_request_id = False
            raise bad_request(
                'field "request_id" cannot be echoed (a number out of range,'
                " or nested too deeply)"
            )
        if message.get("type") != "request":
            raise bad_request('field "type" must be "request"')
        if not isinstance(api, str) or not api:
            raise bad_request('field "api" must be a non-empty string')
        session_id = message.get("session_id")
        if session_id is not None and not isinstance(session_id, str):
            raise bad_request('field "session_id" must be a string or null')
        partial.session_id = session_id
        payload = message.get("payload")
        if payload is None:
            payload = {}
        if not isinstance(payload, dict):
            raise bad_request('field "payload" must be a JSON object')
        partial.payload = payload
        partial.request_key = _request_key(message)
    except ApiError as e:
        e.request = partial
        raise
    return partial


def _request_key(message: dict) -> Optional[str]:
    key = message.get("request_key")
    if key is not None and not (
        isinstance(key, str) and 1 <= len(key) <= REQUEST_KEY_MAX and _storable(key)
    ):
        raise bad_request(
            f'field "request_key" must be a string of 1 to {REQUEST_KEY_MAX} characters'
            " (no NUL, no lone surrogate), or null"
        )
    return key


def _storable(text: str) -> bool:
    """Whether PostgreSQL can store C{text}: no NUL, valid Unicode (JSON
    can carry a lone surrogate as an escape)."""
    if "\x00" in text:
        return False
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _echoable(value: Any) -> bool:
    """Whether C{value} can be sent back as JSON: no number beyond a float's
    range, no nesting too deep to encode."""
    try:
        json.dumps(value, default=_to_json, allow_nan=False)
    except (ValueError, TypeError, RecursionError):
        return False
    return True


def _to_json(value: Any) -> Any:
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


class JsonPayload:
    """A payload that is JSON text already (PostgreSQL writes items and
    carts so); L{encode} puts it into the answer as it is."""

    __slots__ = ("text",)

    def __init__(self, text: str) -> None:
        self.text = text

    def __repr__(self) -> str:
        return f"JsonPayload({self.text!r})"


def payload_text(payload: Any) -> str:
    """An answer's payload as the JSON text L{encode} would put in the frame."""
    if isinstance(payload, JsonPayload):
        return payload.text
    return _encode(payload).decode("utf-8")


def encode(message: dict) -> bytes:
    """Encode an answer dict as one frame body."""
    payload = message.get("payload")
    if isinstance(payload, JsonPayload):
        head = _encode({k: v for k, v in message.items() if k != "payload"})
        # head is a JSON object with at least its "type": open it again.
        return head[:-1] + b',"payload":' + payload.text.encode("utf-8") + b"}"
    return _encode(message)


_ENCODER = json.JSONEncoder(default=_to_json, ensure_ascii=False, separators=(",", ":"))
_ASCII_ENCODER = json.JSONEncoder(default=_to_json, ensure_ascii=True, separators=(",", ":"))


def _encode(message: dict) -> bytes:
    try:
        return _ENCODER.encode(message).encode("utf-8")
    except UnicodeEncodeError:
        # A lone surrogate echoed from the request (JSON can carry one as
        # an escape, UTF-8 cannot): escape every non-ASCII character.
        return _ASCII_ENCODER.encode(message).encode("utf-8")


def _answer(kind: str, request: Optional[Request], session_id: Any) -> dict:
    answer = {
        "type": kind,
        "api": request.api if request else None,
        "session_id": session_id,
    }
    if request is not None and request.has_request_id:
        answer["request_id"] = request.request_id
    return answer


def response(request: Request, payload: dict, session_id: Any = ...) -> dict:
    """A success answer; C{session_id} defaults to the request's."""
    if session_id is ...:
        session_id = request.session_id
    answer = _answer("response", request, session_id)
    answer["payload"] = payload
    return answer


def error(
    request: Optional[Request], code: str, message: str, extra: Optional[dict] = None
) -> dict:
    """An error answer that echoes what could be read of the request;
    C{extra} fields go into the error object after code and message."""
    answer = _answer("error", request, request.session_id if request else None)
    answer["error"] = {"code": code, "message": message, **(extra or {})}
    return answer


__all__ = [
    "BAD_REQUEST",
    "Request",
    "decode_json",
    "parse_request",
    "encode",
    "JsonPayload",
    "payload_text",
    "response",
    "error",
]
