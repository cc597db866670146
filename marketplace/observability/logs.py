"""Logs as one JSON object per line (C{--log-json FILE}), for log shippers.

twisted.logger's L{jsonFileLogObserver} writes each event with
L{eventAsJSON}: its format string, its fields, its time and level, and
C{{"unpersistable": true}} for any field that is not plain data.  What the
daemon logs holds no password, session id or card number in either format
(the log lines name accounts, items and codes, never request payloads).

twistd picks the application's L{ILogObserver} component, if it has one,
over its own text log (C{--logfile}); L{log_json_to} sets it when the
daemon's service is put into the application.  With C{--workers}, the
other workers' lines reach this log through the first one, each as an
event whose C{line} field holds the worker's text.
"""

import sys
from typing import IO

from twisted.application.service import IService
from twisted.logger import ILogObserver, jsonFileLogObserver


def json_observer(destination: str) -> ILogObserver:
    """An observer writing one JSON object per line to the file
    C{destination} (appended to), or to standard output for C{-}."""
    out: IO[str]
    if destination == "-":
        out = sys.stdout
    else:
        out = open(destination, "a", encoding="utf-8", buffering=1)
    # No record separator: one object per line, as log shippers read them.
    return jsonFileLogObserver(out, recordSeparator="")


def log_json_to(top: IService, destination: str) -> IService:
    """Make C{top} (the daemon's service) log in JSON to C{destination}
    once twistd puts it into its application."""
    observer = json_observer(destination)
    set_parent = top.setServiceParent

    def into(parent):
        set_component = getattr(parent, "setComponent", None)
        if set_component is not None:
            set_component(ILogObserver, observer)
        return set_parent(parent)

    top.setServiceParent = into
    return top


__all__ = ["json_observer", "log_json_to"]
