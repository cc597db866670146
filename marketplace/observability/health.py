"""Health checks for load balancers and orchestrators (HAProxy, Kubernetes).

- C{/health/live}: the process works (its reactor answers): 200.
- C{/health/ready}: the daemon can take traffic: every one of its services
  listens and every one of its databases answers C{SELECT 1} within
  L{READY_TIMEOUT} seconds; 200 if so, else 503.  The body is JSON saying
  what is and is not ready.

L{Readiness} is the logic; the resources only turn it into HTTP.
"""

import json
from typing import Dict, Iterable, Tuple

from twisted.internet import defer
from twisted.logger import Logger
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET

#: Seconds a database has to answer a readiness probe.
READY_TIMEOUT = 2.0


class Readiness:
    """Whether a daemon is ready: its C{servers} (L{ApiServer}s) listen and
    its C{databases} answer within C{timeout} seconds on C{clock}.

    At most one probe per database is under way at a time: probes that come
    while one is waited for share its answer, so a hanging database does
    not pile up statements in its pool.
    """

    def __init__(self, servers: Iterable, databases: Iterable, clock, timeout=READY_TIMEOUT):
        self.servers = list(servers)
        self.databases = list(databases)
        self.clock = clock
        self.timeout = timeout
        self._probes: Dict[str, defer.Deferred] = {}

    async def check(self) -> Tuple[bool, dict]:
        """Whether the daemon is ready, and a report: each service's
        listening, each database's C{ok}, C{unreachable} or C{timeout}."""
        listening = {server.name: server.port is not None for server in self.servers}
        answers = await defer.gatherResults([self._probe(db) for db in self.databases])
        databases = {db.name: answer for db, answer in zip(self.databases, answers)}
        ready = all(listening.values()) and all(a == "ok" for a in databases.values())
        return ready, {"ready": ready, "listening": listening, "databases": databases}

    def _probe(self, database) -> defer.Deferred:
        """C{ok}, C{unreachable} or C{timeout} for one database."""
        probe = self._probes.get(database.name)
        if probe is None:
            probe = defer.maybeDeferred(database.query, "SELECT 1")
            probe.addCallbacks(lambda _: "ok", lambda _: "unreachable")
            self._probes[database.name] = probe
            probe.addBoth(self._forget, database.name)
        answer: defer.Deferred = defer.Deferred()
        timer = self.clock.callLater(self.timeout, _fire, answer, "timeout")

        def done(result):
            if timer.active():
                timer.cancel()
            _fire(answer, result)
            return result

        probe.addBoth(done)
        return answer

    def _forget(self, result, name: str):
        self._probes.pop(name, None)
        return result


def _fire(d: defer.Deferred, result) -> None:
    if not d.called:
        d.callback(result)


class LiveResource(Resource):
    """C{/health/live}: 200 while the reactor answers."""

    isLeaf = True

    def render_GET(self, request) -> bytes:  # noqa: N802 (twisted.web name)
        request.setHeader(b"content-type", b"application/json")
        request.setHeader(b"cache-control", b"no-store")
        return b'{"live": true}\n'


class ReadyResource(Resource):
    """C{/health/ready}: 200 when L{Readiness} says so, else 503."""

    isLeaf = True
    log = Logger()

    def __init__(self, readiness: Readiness) -> None:
        super().__init__()
        self.readiness = readiness

    def render_GET(self, request):  # noqa: N802 (twisted.web name)
        gone = []
        request.notifyFinish().addErrback(gone.append)
        d = defer.Deferred.fromCoroutine(self.readiness.check())
        d.addErrback(self._failed)
        d.addCallback(self._answer, request, gone)
        return NOT_DONE_YET

    def _failed(self, failure) -> Tuple[bool, dict]:
        self.log.failure("the readiness check failed", failure)
        return False, {"ready": False, "error": "the check failed; the daemon logged why"}

    def _answer(self, outcome: Tuple[bool, dict], request, gone: list) -> None:
        if gone:
            return  # the prober hung up
        ready, report = outcome
        request.setResponseCode(200 if ready else 503)
        request.setHeader(b"content-type", b"application/json")
        request.setHeader(b"cache-control", b"no-store")
        request.write(json.dumps(report, sort_keys=True).encode("utf-8") + b"\n")
        request.finish()


def health_resource(readiness: Readiness) -> Resource:
    """The C{/health} folder: C{live} and C{ready}."""
    folder = Resource()
    folder.putChild(b"live", LiveResource())
    folder.putChild(b"ready", ReadyResource(readiness))
    return folder


__all__ = ["Readiness", "READY_TIMEOUT", "health_resource"]
