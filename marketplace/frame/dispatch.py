"""Turning a request frame into an answer frame for one service.

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

from dataclasses import dataclass
from time import perf_counter
from typing import Any, Awaitable, Callable, Dict, Optional, Union

from twisted.internet import defer
from twisted.logger import Logger, LogLevel
from twisted.python.failure import Failure

from marketplace.contract.errors import (
    INTERNAL,
    NOT_LOGGED_IN,
    UNAVAILABLE,
    UNKNOWN_API,
    ApiError,
)
from marketplace.frame.quietlog import LogLimiter
from marketplace.frame.unavailable import is_unavailable
from marketplace.frame import envelope

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

    request: envelope.Request
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
            request = envelope.parse_request(frame)
            d = self._call(request, source)
        except Exception:
            return defer.succeed(self._failure_answer(Failure(), request, started))
        return d.addCallbacks(
            self._answer,
            self._failure_answer,
            callbackArgs=(request, started),
            errbackArgs=(request, started),
        )

    def _call(self, request: envelope.Request, source: Optional[str]) -> defer.Deferred:
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

    def _answer(self, result: Any, request: envelope.Request, started: float) -> bytes:
        """The encoded success answer of a handler's result."""
        try:
            if isinstance(result, Reply):
                answer = envelope.response(request, result.payload, result.session_id)
            else:
                answer = envelope.response(request, result)
            data = envelope.encode(answer)
        except Exception:
            return self._failure_answer(Failure(), request, started)
        self.observe(request.api, OK, started)
        return data

    def _failure_answer(
        self, failure: Failure, request: Optional[envelope.Request], started: float
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
        return envelope.encode(answer)

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
        return envelope.error(request, code, message, extra)


def _with_session(session: Session, call: Call, handler: Handler) -> defer.Deferred:
    call.session = session
    return _deferred(handler(call))


def _deferred(result: Any) -> defer.Deferred:
    """A handler's result as a Deferred: it is one, or a coroutine."""
    if isinstance(result, defer.Deferred):
        return result
    return defer.Deferred.fromCoroutine(result)
