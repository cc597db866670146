"""The HTTP endpoint of a daemon (C{--metrics ENDPOINT}): C{/metrics} in the
Prometheus text format (prometheus-client's Twisted resource), and the
health checks of L{marketplace.observability.health}.

It listens from the start, before the databases are ready, so that
C{/health/live} answers at once and C{/health/ready} says what is missing.
With C{--workers N} each worker process serves its own: worker k listens
on the given port plus k (see L{worker_description}).
"""

import re
from typing import Optional

from prometheus_client.exposition import make_wsgi_app
from twisted.application.service import Service
from twisted.internet import defer
from twisted.internet.endpoints import serverFromString
from twisted.logger import Logger
from twisted.python.threadpool import ThreadPool
from twisted.web.resource import Resource
from twisted.web.server import Site
from twisted.web.wsgi import WSGIResource

from marketplace.frame.deferreds import when_fired
from marketplace.observability.health import Readiness, health_resource
from marketplace.observability.metrics import Metrics

_PORT = re.compile(r"^(tcp6?|ssl):(\d+)(?=:|$)")

_INDEX = b"""<html><body><p>Marketplace daemon:
<a href="/metrics">/metrics</a>, <a href="/health/live">/health/live</a>,
<a href="/health/ready">/health/ready</a></p></body></html>
"""


def worker_description(description: str, worker: int) -> str:
    """The endpoint description of worker C{worker}'s metrics: the port of
    a C{tcp:}, C{tcp6:} or C{ssl:} description plus C{worker} (a port of 0
    stays 0).  Other descriptions are taken as they are for worker 0 only.
    """
    if worker == 0:
        return description
    found = _PORT.match(description)
    if found is None:
        raise ValueError(
            "--metrics with --workers needs a tcp:PORT or ssl:PORT description,"
            f" not {description!r}"
        )
    port = int(found.group(2))
    if port != 0:
        port += worker
    return f"{found.group(1)}:{port}{description[found.end():]}"


class _QuietSite(Site):
    """A site that writes no access log: probes come every second."""

    noisy = False

    def log(self, request) -> None:
        pass


def monitor_site(metrics: Metrics, readiness: Readiness, reactor) -> Site:
    """The web site of C{/metrics}, C{/health/live} and C{/health/ready}.

    C{/metrics} is prometheus-client's WSGI app, as its Twisted
    C{MetricsResource} serves it, but in a thread of its own
    (C{site.threadpool}, which L{MonitorServer} starts and stops): in the
    reactor's pool a scrape would wait behind password hashing, and the
    daemon would look down exactly when it is busiest.
    """
    threadpool = ThreadPool(minthreads=1, maxthreads=1, name="metrics")
    root = Resource()
    root.putChild(b"", _Static(_INDEX, b"text/html"))
    root.putChild(
        b"metrics", WSGIResource(reactor, threadpool, make_wsgi_app(metrics.registry))
    )
    root.putChild(b"health", health_resource(readiness))
    site = _QuietSite(root)
    site.threadpool = threadpool
    return site


class _Static(Resource):
    isLeaf = True

    def __init__(self, body: bytes, kind: bytes) -> None:
        super().__init__()
        self.body = body
        self.kind = kind

    def render_GET(self, request) -> bytes:  # noqa: N802 (twisted.web name)
        request.setHeader(b"content-type", self.kind)
        return self.body


class MonitorServer(Service):
    """Serves L{monitor_site} on the endpoint C{description} while running."""

    log = Logger()
    name = "monitor"

    def __init__(self, description: str, site: Site, reactor, on_failure=None) -> None:
        self.description = description
        self.site = site
        self.reactor = reactor
        self.on_failure = on_failure
        self.port = None
        self._listening: Optional[defer.Deferred] = None

    def startService(self):
        super().startService()
        self.site.threadpool.start()
        endpoint = serverFromString(self.reactor, self.description)
        self._listening = endpoint.listen(self.site)
        self._listening.addCallbacks(self._listened, self._failed)

    def listening(self) -> defer.Deferred:
        """A Deferred that fires once the metrics are served, or fails if
        they cannot be."""

        def check(_):
            if self.port is None:
                raise RuntimeError(f"the metrics are not served on {self.description}")

        return when_fired(self._listening).addCallback(check)

    def _listened(self, port) -> None:
        if not self.running:
            port.stopListening()  # stopped while it was starting
            return
        self.port = port
        address = port.getHost()
        self.log.info(
            "metrics on http://{host}:{port}/metrics, health on /health/live and /health/ready",
            host=getattr(address, "host", address),
            port=getattr(address, "port", ""),
        )

    def _failed(self, failure) -> None:
        self.log.failure("cannot serve the metrics on {where}", failure, where=self.description)
        if self.on_failure is not None:
            self.on_failure()

    def stopService(self):
        super().stopService()
        port, self.port = self.port, None
        d = defer.maybeDeferred(port.stopListening) if port is not None else defer.succeed(None)
        # Once no scrape can come: the pool's thread ends after its scrape.
        return d.addBoth(lambda _: self.site.threadpool.stop())


__all__ = ["MonitorServer", "monitor_site", "worker_description"]
