"""What a daemon counts, for Prometheus (prometheus-client).

One L{Metrics} per daemon process holds its own registry and every metric
definition.  The hooks are small and local: a L{Dispatcher} calls its
C{observe(api, code, started)} once per answer (a counter increment and a
histogram observation on children looked up once per API); connections,
requests in flight, pool sizes, pool waits and reconnects are read from the
objects that keep them, at scrape time, by L{_LiveState}; purchases,
authorisations and login throttling are counted by wrapping those three
APIs' handlers, off the hot path.

Labels stay bounded: an API name that the service does not have is counted
as C{unknown}, a request whose API could not be read as C{none}.
"""

from time import perf_counter
from typing import Any, Dict, Iterable, List, Optional

from prometheus_client import CollectorRegistry, Counter, Histogram, disable_created_metrics
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.process_collector import ProcessCollector

from marketplace.contract.errors import PAYMENT_DECLINED, RATE_LIMITED, UNAVAILABLE, ApiError
from marketplace.postgres.database import is_unavailable
from marketplace.frame.dispatch import OK

#: Response-time buckets in seconds: the hot APIs answer in well under a
#: millisecond, a purchase or a login (argon2) in tens of milliseconds.
LATENCY_BUCKETS = (
    0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
    0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)

#: The label of an API name the service does not have, and of a request
#: whose API could not be read.
UNKNOWN_API_LABEL = "unknown"
NO_API_LABEL = "none"

#: MakePurchase's outcomes by the code of its answer.
PURCHASE_OUTCOMES = {PAYMENT_DECLINED: "declined", UNAVAILABLE: "unavailable"}


def now() -> float:
    """The clock the dispatcher's C{started} comes from."""
    return perf_counter()


class _ApiChildren:
    """The counters (by code) and the histogram of one service's API."""

    __slots__ = ("api", "latency", "codes")

    def __init__(self, calls: Counter, latency: Histogram, service: str, api: str) -> None:
        self.api = api
        self.latency = latency.labels(service, api)
        self.codes: Dict[str, Any] = {OK: calls.labels(service, api, OK)}


class ServiceObserver:
    """Counts the answers of one service (C{service}) whose APIs are
    C{apis}; L{observe} is what the dispatcher calls."""

    def __init__(self, metrics: "Metrics", service: str, apis: Iterable[str]) -> None:
        self.service = service
        self._metrics = metrics
        self._apis: Dict[Optional[str], _ApiChildren] = {}
        for api in apis:
            self._apis[api] = self._children(api)
        self._apis[None] = self._children(NO_API_LABEL)
        self._unknown = self._children(UNKNOWN_API_LABEL)
        self.unavailable = metrics.database_unavailable.labels(service)

    def _children(self, api: str) -> _ApiChildren:
        return _ApiChildren(self._metrics.calls, self._metrics.latency, self.service, api)

    def observe(self, api: Optional[str], code: str, started: float) -> None:
        """One answer of C{api} with C{code} (C{OK} for a success), whose
        request came in at C{started} (L{now})."""
        elapsed = perf_counter() - started
        children = self._apis.get(api)
        if children is None:
            children = self._unknown
        counter = children.codes.get(code)
        if counter is None:
            # Codes are the fixed set of errors.py, so this happens a few
            # times per API at most.
            counter = children.codes[code] = self._metrics.calls.labels(
                self.service, children.api, code
            )
        counter.inc()
        children.latency.observe(elapsed)


class _Watched:
    """An API handler wrapped to count its outcomes with C{count(error)}
    (None for a success); other attributes are the handler's own."""

    def __init__(self, handler, count) -> None:
        self._handler = handler
        self._count = count

    def __getattr__(self, name: str) -> Any:
        return getattr(self._handler, name)

    def __call__(self, call):
        return self._run(call)

    async def _run(self, call):
        try:
            answer = await self._handler(call)
        except Exception as e:
            self._count(e, None)
            raise
        self._count(None, answer)
        return answer


class Metrics:
    """Every metric of one daemon process, in a registry of its own."""

    def __init__(self, registry: Optional[CollectorRegistry] = None) -> None:
        # Counters' *_created series would double what is scraped, for a
        # start time that process_start_time_seconds already gives.
        disable_created_metrics()
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.calls = Counter(
            "marketplace_calls",
            "Requests answered, by service, API and outcome code (OK for a success).",
            ["service", "api", "code"],
            registry=r,
        )
        self.latency = Histogram(
            "marketplace_response_seconds",
            "Time from a request's frame to its answer, by service and API.",
            ["service", "api"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.database_unavailable = Counter(
            "marketplace_database_unavailable_answers",
            "Requests answered UNAVAILABLE because a database could not be reached.",
            ["service"],
            registry=r,
        )
        self.purchases = Counter(
            "marketplace_purchases",
            "Purchases by outcome: completed, declined, unavailable (nothing bought),"
            " swept (left pending by a daemon that died, settled by the sweeper).",
            ["outcome"],
            registry=r,
        )
        self.authorisations = Counter(
            "marketplace_payment_authorisations",
            "AuthorizePayment answers of the financial-transactions service, by"
            " outcome: approved, declined, voided, error.",
            ["outcome"],
            registry=r,
        )
        self.login_throttled = Counter(
            "marketplace_login_throttled",
            "Logins answered RATE_LIMITED (too many failed logins of a username).",
            ["service"],
            registry=r,
        )
        for outcome in ("completed", "declined", "unavailable", "swept"):
            self.purchases.labels(outcome)
        for outcome in ("approved", "declined", "voided", "error"):
            self.authorisations.labels(outcome)
        self.live = _LiveState()
        r.register(self.live)
        ProcessCollector(registry=r)

    def watch_dispatcher(self, dispatcher) -> ServiceObserver:
        """Count the answers of C{dispatcher}, and the purchases, payment
        authorisations and throttled logins among them."""
        service = dispatcher.name
        observer = ServiceObserver(self, service, dispatcher.apis)
        dispatcher.observe = observer.observe
        dispatcher.database_unavailable = observer.unavailable.inc
        apis = dispatcher.apis
        if "Login" in apis:
            self.login_throttled.labels(service)
            apis["Login"] = _rewrap(apis["Login"], self._count_login(service))
        if service == "buyer" and "MakePurchase" in apis:
            apis["MakePurchase"] = _rewrap(apis["MakePurchase"], self._count_purchase)
        if "AuthorizePayment" in apis:
            apis["AuthorizePayment"] = _rewrap(
                apis["AuthorizePayment"], self._count_authorisation
            )
        return observer

    def watch_factory(self, service: str, factory) -> None:
        """Report the open connections and requests in flight of one
        listener's L{FrameFactory}."""
        self.live.factories.append((service, factory))

    def watch_limits(self, limits) -> None:
        """Report the daemon's connection count and refusals (L{Limits})."""
        self.live.limits = limits

    def watch_database(self, database) -> None:
        """Report one L{Database}'s pool: size, live connections, waits,
        time waited, reconnects."""
        self.live.databases.append(database)

    def swept(self, settled: int) -> None:
        """C{settled} purchases were settled by the sweeper."""
        if settled:
            self.purchases.labels("swept").inc(settled)

    def _count_login(self, service: str):
        throttled = self.login_throttled.labels(service)

        def count(error, answer) -> None:
            if isinstance(error, ApiError) and error.code == RATE_LIMITED:
                throttled.inc()

        return count

    def _count_purchase(self, error, answer) -> None:
        if error is None:
            outcome = "completed"
        elif isinstance(error, ApiError):
            outcome = PURCHASE_OUTCOMES.get(error.code)
        elif is_unavailable(error):
            outcome = "unavailable"
        else:
            outcome = None
        if outcome is not None:
            self.purchases.labels(outcome).inc()

    def _count_authorisation(self, error, answer) -> None:
        if error is not None:
            outcome = "error"
        elif answer.get("voided"):
            outcome = "voided"
        elif answer.get("approved"):
            outcome = "approved"
        else:
            outcome = "declined"
        self.authorisations.labels(outcome).inc()


def _rewrap(api, count):
    """C{api} (a dispatch.Api) with its handler counted by C{count}."""
    from dataclasses import replace

    return replace(api, handler=_Watched(api.handler, count))


class _LiveState:
    """A collector of what is read from the daemon's objects when scraped:
    connections, requests in flight, and the database pools.

    Scrapes run in a thread (prometheus-client's Twisted resource is a WSGI
    app); only single reads (C{len}, attributes) of reactor-thread objects
    are made here, which the GIL makes safe.
    """

    def __init__(self) -> None:
        self.factories: List[tuple] = []
        self.databases: List[Any] = []
        self.limits = None

    def describe(self):
        return []

    def collect(self):
        connections = GaugeMetricFamily(
            "marketplace_connections_open", "Connections open, by service.", labels=["service"]
        )
        in_flight = GaugeMetricFamily(
            "marketplace_requests_in_flight",
            "Requests being worked on, by service.",
            labels=["service"],
        )
        for service, factory in self.factories:
            connections.add_metric([service], len(factory.connections))
            in_flight.add_metric([service], len(factory._in_flight))
        yield connections
        yield in_flight
        refused = CounterMetricFamily(
            "marketplace_connections_refused",
            "Connections refused (with a RATE_LIMITED frame) because their service had"
            " --max-connections open and none idle to give way.",
        )
        refused.add_metric([], getattr(self.limits, "refused", 0))
        yield refused
        size = GaugeMetricFamily(
            "marketplace_db_pool_size", "Connections of a database pool.", labels=["database"]
        )
        busy = GaugeMetricFamily(
            "marketplace_db_pool_busy",
            "Connections of a database pool lent out to a statement now.",
            labels=["database"],
        )
        dead = GaugeMetricFamily(
            "marketplace_db_pool_dead",
            "Connections of a database pool that are missing and being opened again.",
            labels=["database"],
        )
        waits = CounterMetricFamily(
            "marketplace_db_pool_waits",
            "Statements that waited for a free connection of the pool.",
            labels=["database"],
        )
        waited = CounterMetricFamily(
            "marketplace_db_pool_wait_seconds",
            "Time statements spent waiting for a free connection of the pool.",
            labels=["database"],
        )
        reconnects = CounterMetricFamily(
            "marketplace_db_reconnects",
            "Pool connections made again after their database went away.",
            labels=["database"],
        )
        for database in self.databases:
            stats = database.stats
            labels = [database.name]
            size.add_metric(labels, database.size)
            lent, gone = database.pool_counts()
            busy.add_metric(labels, lent)
            dead.add_metric(labels, gone)
            waits.add_metric(labels, stats.waits)
            waited.add_metric(labels, stats.waited)
            reconnects.add_metric(labels, stats.reconnects)
        yield from (size, busy, dead, waits, waited, reconnects)


__all__ = ["Metrics", "ServiceObserver", "LATENCY_BUCKETS", "now"]
