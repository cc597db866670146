"""Turning a request frame into an answer frame for one service.

The envelope (PROTOCOL.md, Envelope) is decoded and encoded here, with no
socket: a frame is bytes in, a dict out, and back.

The dispatcher decodes the envelope, checks the session where the API needs
one (unless the API's own statement checks it, see
marketplace/product/statements.py), calls the API's handler and turns
whatever happens into exactly one answer: this is the one place where
exceptions become error frames.

It is built with Deferred callbacks alone, no coroutine of its own: it runs
for every request, and a coroutine costs more to start and resume than a
callback does to run.  A handler may be a coroutine function or return a
Deferred (the single-statement APIs do, for the same reason).
"""

import hashlib
import json
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from time import perf_counter
from typing import Any, Awaitable, Callable, Dict, Iterable, Optional, Union

from twisted.internet import defer
from twisted.logger import Logger, LogLevel
from twisted.python.failure import Failure

from marketplace.contract.errors import (
    INTERNAL,
    NOT_LOGGED_IN,
    UNAVAILABLE,
    UNKNOWN_API,
    ApiError,
    bad_request,
)
from marketplace.frame.quietlog import LogLimiter
from marketplace.frame.unavailable import is_unavailable


# The envelope.

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
        json.dumps(value, default=json_default, allow_nan=False)
    except (ValueError, TypeError, RecursionError):
        return False
    return True


def json_default(value: Any) -> Any:
    """What the JSON encoder writes for a Decimal (a number: the shortest
    repr of the float is the decimal given, for any price the protocol
    allows) or a datetime (ISO 8601)."""
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


_ENCODER = json.JSONEncoder(default=json_default, ensure_ascii=False, separators=(",", ":"))
_ASCII_ENCODER = json.JSONEncoder(default=json_default, ensure_ascii=True, separators=(",", ":"))


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


# The identity of a request: the key its session is filed under, and what
# a request key is scoped to and stands for (PROTOCOL.md, Request keys).


def session_key(session_id: str) -> str:
    """The key a session is filed under: the SHA-256 of its id."""
    return hashlib.sha256(session_id.encode("utf-8", "surrogatepass")).hexdigest()


def session_scope(role: str, session_key: str) -> str:
    """The scope of a session's request keys (C{session_key}: the SHA-256
    of its id)."""
    return f"{role}:{session_key}"


def username_scope(role: str, username: str) -> str:
    """The scope of CreateAccount's request keys, before there is an account."""
    return f"{role}:username:{username}"


def key_id(scope: str, key: str) -> bytes:
    """What a request key is filed under: the SHA-256 (32 bytes) of its
    scope and the key, joined by a NUL (neither can hold one).  schema.sql
    computes the same of the keys it moves from the older table."""
    text = f"{scope}\x00{key}"
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).digest()


def fingerprint(api: str, payload: dict, leave_out: Iterable[str] = ()) -> bytes:
    """The SHA-256 (32 bytes) of an API and its payload, the fields
    C{leave_out} left out (a password is never filed, not even as a fast
    hash)."""
    kept = {name: value for name, value in payload.items() if name not in leave_out}
    text = json.dumps([api, kept], sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).digest()


# Dispatching.

#: The outcome code an observer is given for a success answer.
OK = "OK"


def _unobserved(*args: Any) -> None:
    """The observer of a dispatcher that nobody watches."""


def _loggable(api: Any) -> Any:
    """An API name as the client sent it, made safe for a log line: at most
    64 characters, lone surrogates escaped (a log file writes UTF-8, and an
    observer that fails is dropped, so such a name could stop the logging)."""
    if not isinstance(api, str):
        return api
    return api[:64].encode("utf-8", "backslashreplace").decode("utf-8")


@dataclass(frozen=True)
class Session:
    """A checked session: whose it is, and the key its data is filed under."""

    user_id: int
    key: str


@dataclass
class Call:
    """What a handler gets: the request and, for session APIs, the session."""

    request: Request
    session: Optional[Session] = None
    #: The client's source address (marketplace.frame.protocol.source_of); None
    #: for a caller in this process.
    source: Optional[str] = None

    @property
    def payload(self) -> dict:
        return self.request.payload


@dataclass
class Reply:
    """A handler's answer when it also sets the envelope's session_id."""

    payload: dict
    session_id: Any


Handler = Callable[[Call], Union[Awaitable[Any], "defer.Deferred[Any]"]]
Authenticate = Callable[[str], Awaitable[Session]]


@dataclass(frozen=True)
class Api:
    """One API of a service.

    C{checks_session}: the handler checks the session itself, in the
    statement that does its work (marketplace/product/statements.py, where
    customer and product data share a database), so the dispatcher only
    makes sure there is a session id.
    """

    handler: Handler
    needs_session: bool = True
    checks_session: bool = False


class Dispatcher:
    """Answers the frames of one service (C{name}) with its C{apis}."""

    log = Logger()

    def __init__(
        self,
        name: str,
        apis: Dict[str, Api],
        authenticate: Authenticate,
    ) -> None:
        self.name = name
        self.apis = apis
        self.authenticate = authenticate
        # One line per service, API and code every few seconds: an outage
        # or a misbehaving client must not flood the log.
        self._quiet = LogLimiter(self.log)
        #: Called once per answer with the API (None if unreadable), the
        #: outcome code (L{OK} or an error code) and the request's
        #: C{perf_counter()} start (see marketplace.observability.metrics).
        self.observe = _unobserved
        #: Called when a request is answered UNAVAILABLE because a database
        #: could not be reached.
        self.database_unavailable = _unobserved

    def handle_frame(
        self, frame: bytes, source: Optional[str] = None
    ) -> "defer.Deferred[bytes]":
        """The encoded answer to one frame from C{source}; this Deferred
        never fails."""
        started = perf_counter()
        request = None
        try:
            request = parse_request(frame)
            d = self._call(request, source)
        except Exception:
            return defer.succeed(self._failure_answer(Failure(), request, started))
        return d.addCallbacks(
            self._answer,
            self._failure_answer,
            callbackArgs=(request, started),
            errbackArgs=(request, started),
        )

    def _call(self, request: Request, source: Optional[str]) -> defer.Deferred:
        """A Deferred of the handler's result, the session checked first
        where the API needs one and does not check it itself."""
        api = self.apis.get(request.api)
        if api is None:
            raise ApiError(
                UNKNOWN_API, f"the {self.name} service has no API {request.api!r}"
            )
        call = Call(request, source=source)
        if api.needs_session:
            if request.session_id is None:
                raise ApiError(NOT_LOGGED_IN, f"{request.api} needs a session: log in first")
            if not api.checks_session:
                d = defer.ensureDeferred(self.authenticate(request.session_id))
                return d.addCallback(_with_session, call, api.handler)
        return _deferred(api.handler(call))

    def _answer(self, result: Any, request: Request, started: float) -> bytes:
        """The encoded success answer of a handler's result."""
        try:
            if isinstance(result, Reply):
                answer = response(request, result.payload, result.session_id)
            else:
                answer = response(request, result)
            data = encode(answer)
        except Exception:
            return self._failure_answer(Failure(), request, started)
        self.observe(request.api, OK, started)
        return data

    def _failure_answer(
        self, failure: Failure, request: Optional[Request], started: float
    ) -> bytes:
        """The encoded error answer for what went wrong."""
        error = failure.value
        if isinstance(error, ApiError):
            request = getattr(error, "request", request)
            code = error.code
            answer = self._error(request, code, error.message, error.extra)
        elif is_unavailable(error):
            code = UNAVAILABLE
            answer = self._error(
                request, UNAVAILABLE, "the database cannot be reached; retry later"
            )
            self.database_unavailable()
        else:
            api = self._api_key(request)
            self._quiet.emit(
                (api if isinstance(api, str) and api in self.apis else None, failure.type),
                LogLevel.critical,
                "{service} {api} failed",
                log_failure=failure,
                service=self.name,
                api=api,
            )
            code = INTERNAL
            answer = self._error(
                request, INTERNAL, "the server failed to answer; it has logged why"
            )
        self.observe(request.api if request else None, code, started)
        return encode(answer)

    def _api_key(self, request) -> Any:
        """The request's API for a log line; unknown names are all one."""
        api = request.api if request else None
        return api if isinstance(api, str) and api in self.apis else _loggable(api)

    def _error(self, request, code: str, message: str, extra: Optional[dict] = None) -> dict:
        api = self._api_key(request)
        self._quiet.emit(
            (api if isinstance(api, str) and api in self.apis else None, code),
            LogLevel.info,
            "{service} {api} answered {code}",
            service=self.name,
            api=api,
            code=code,
        )
        return error(request, code, message, extra)


def _with_session(session: Session, call: Call, handler: Handler) -> defer.Deferred:
    call.session = session
    return _deferred(handler(call))


def _deferred(result: Any) -> defer.Deferred:
    """A handler's result as a Deferred: it is one, or a coroutine."""
    if isinstance(result, defer.Deferred):
        return result
    return defer.Deferred.fromCoroutine(result)
