"""How a twistd daemon ends: exit status 0 when it was asked to stop
(Ctrl-C, SIGTERM), 1 when it stopped because of a fault.

twistd itself exits 0 whatever made the reactor stop, and after SIGINT or
SIGTERM it kills itself with that signal once stopped, so a supervisor (or
C{make run}) cannot tell a requested stop from a crash.  L{install} takes
over SIGINT and SIGTERM so that a requested stop ends with status 0, and
L{fail} stops the daemon with a clear log line and status 1.
"""

import atexit
import os
import signal
import sys
from typing import Optional

from twisted.internet import error
from twisted.logger import Logger

log = Logger()

#: The exit status the process ends with; L{fail} sets it.
_status = 0
_stopping = False
_installed = False


def install(reactor) -> None:
    """In a twistd daemon: stop cleanly (status 0) on SIGINT and SIGTERM,
    and end the process with the status of L{fail} if it was called.
    Once per process: later calls do nothing."""
    global _installed
    if _installed:
        return
    _installed = True
    # Registered before anything else at exit, so it runs last (atexit runs
    # its functions last registered first): the embedded server's own exit
    # handler runs before the process ends.
    atexit.register(_end_with_status)
    reactor.callWhenRunning(_take_signals, reactor)


def _take_signals(reactor) -> None:
    # After the reactor's own handlers (installed during startup), which
    # would make twistd kill itself with the signal once stopped.
    def requested(number, frame) -> None:
        reactor.callFromThread(_requested_stop, reactor, signal.Signals(number).name)

    signal.signal(signal.SIGINT, requested)
    signal.signal(signal.SIGTERM, requested)


def _requested_stop(reactor, name: str) -> None:
    if not _stopping:
        log.info("{signal} received; stopping", signal=name)
    stop(reactor)


def fail(reactor, message: Optional[str], **fields) -> None:
    """Log C{message} (a format string of C{fields}; None if the caller
    has said why) as the reason the daemon stops, and stop it; the process
    then exits with status 1."""
    global _status
    if not _stopping and message is not None:
        log.critical(message, **fields)
    _status = 1
    stop(reactor)


def failed() -> bool:
    """Whether L{fail} was called."""
    return _status != 0


def stop(reactor) -> None:
    """Stop the reactor, once, if it runs (a stop that is no fault)."""
    global _stopping
    if _stopping or not reactor.running:
        return
    _stopping = True
    try:
        reactor.stop()
    except error.ReactorNotRunning:
        pass


def _end_with_status() -> None:
    if _status:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:
                pass
        os._exit(_status)
