"""Driving the benchmark's clients: set-up, closed-loop runs, results.

Every client is a L{BuyerClient} or L{SellerClient} of the client library
with a connection, an account and a session of its own.  In a run each
client makes its calls one after the other (the next call goes out when
the answer to the last one is in), all clients at once, in one reactor:
there is no thread per client.  A share of the clients (every Kth pair,
seller I with buyer I) can be driven by each of several processes; they
meet at L{Plan}'s C{sync} points so that a run starts at once everywhere.
"""

import os
import time
import uuid
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence, Tuple

from twisted.internet import defer
from twisted.python.failure import Failure

from marketplace.bench import catalog
from marketplace.bench.patience import Stopped, patiently
from marketplace.bench.stats import Recorder, RunResult
from marketplace.bench.workloads import (
    ITEMS_PER_SELLER,
    WORKLOADS,
    ClientState,
    Workload,
    item_spec,
)
from marketplace.clientlib import BuyerClient, ClientError, SellerClient, open_clients
from marketplace.contract.errors import UNKNOWN_API

PASSWORD = "bench-password"
# How many accounts are being created or logged in at one time.
SETUP_CONCURRENCY = 32

Sync = Callable[[], defer.Deferred]


@dataclass(frozen=True)
class Plan:
    """What to run, against which deployment."""

    seller: str = "tcp:host=127.0.0.1:port=8080"
    buyer: str = "tcp:host=127.0.0.1:port=8081"
    scenarios: Tuple[int, ...] = (1, 10, 100)
    calls: int = 1000
    runs: int = 10
    workload: str = "seed"
    items: int = ITEMS_PER_SELLER
    #: Prefix of the usernames, so that benchmarks on one deployment differ.
    tag: str = ""
    #: The catalog the search-shapes and upkeep workloads draw words and
    #: categories from (marketplace/bench/catalog.py).
    catalog_seed: int = 1
    catalog_words: int = 3000
    catalog_categories: int = 20
    #: Seconds a call keeps trying (reconnecting, sending it again) before
    #: it counts as an UNAVAILABLE error.
    retry_deadline: float = 30.0

    def total_calls(self) -> int:
        """Calls of every run of every scenario, both roles."""
        return sum(2 * n for n in self.scenarios) * self.calls * self.runs

    def with_tag(self) -> "Plan":
        """This plan with a fresh tag if it has none."""
        if self.tag:
            return self
        return Plan(**{**vars(self), "tag": "b" + uuid.uuid4().hex[:10]})


class Progress:
    """A count of the calls answered so far, for a progress bar to read,
    and where the timed runs start and end (for the bar's rate)."""

    def __init__(self) -> None:
        self.done = 0

    def run_started(self, clients: int, at: float) -> None:
        """A run of scenario C{clients} started at C{at} (time.monotonic)."""

    def run_ended(self, clients: int, started: float, finished: float, calls: int) -> None:
        """That run ended at C{finished}, after C{calls} calls."""


class _Loop:
    """One client's closed loop: C{calls} calls, each after the last answer."""

    __slots__ = (
        "state", "steps", "left", "recorder", "progress", "finished",
        "_api", "_started", "_inside", "_fired", "_step",
    )

    def __init__(self, state: ClientState, steps, calls: int, recorder: Recorder,
                 progress: Progress) -> None:
        self.state = state
        self.steps = steps
        self.left = calls
        self.recorder = recorder
        self.progress = progress
        self.finished: defer.Deferred = defer.Deferred()
        self._inside = False
        self._fired = False
        self._step = 0

    def start(self) -> defer.Deferred:
        self._next()
        return self.finished

    def _next(self) -> None:
        # A loop rather than recursion, in case an answer comes at once
        # (a call that fails before it is sent).
        steps = self.steps
        while self.left > 0:
            self.left -= 1
            step = steps[self._step % len(steps)]
            self._step += 1
            self._inside = True
            self._fired = False
            self._started = time.perf_counter()
            try:
                self._api, d = step(self.state)
            except Exception:
                self._inside = False
                self.finished.errback(Failure())
                return
            d.addCallbacks(self._answered, self._failed)
            self._inside = False
            if not self._fired:
                return
        self.finished.callback(None)

    def _answered(self, _payload) -> None:
        self.recorder.record(self.state.role, self._api, time.perf_counter() - self._started)
        self._continue()

    def _failed(self, failure: Failure) -> None:
        elapsed = time.perf_counter() - self._started
        code = failure.value.code if failure.check(ClientError) else type(failure.value).__name__
        self.recorder.error(self.state.role, self._api, code, elapsed)
        self._continue()

    def _continue(self) -> None:
        self.progress.done += 1
        if self._inside:
            self._fired = True
        else:
            self._next()


def _cpu() -> float:
    times = os.times()
    return times.user + times.system


async def _limited(calls: Sequence[Callable[[], defer.Deferred]]) -> list:
    """Every call's result, a few at a time; the first failure itself (not
    wrapped in a FirstError)."""
    semaphore = defer.DeferredSemaphore(SETUP_CONCURRENCY)
    try:
        return await defer.gatherResults(
            [semaphore.run(call) for call in calls], consumeErrors=True
        )
    except defer.FirstError as e:
        e.subFailure.raiseException()


class Scenario:
    """The clients of one scenario in this process: sellers and buyers
    C{indexes} of C{clients} pairs."""

    def __init__(self, plan: Plan, clients: int, indexes: Sequence[int], reactor) -> None:
        self.plan = plan
        self.clients = clients
        self.indexes = list(indexes)
        self.reactor = reactor
        self.workload: Workload = WORKLOADS[plan.workload]
        self.sellers: List[ClientState] = []
        self.buyers: List[ClientState] = []

    def _username(self, role: str, index: int) -> str:
        return f"{self.plan.tag}-{self.clients}-{role[0]}{index}"

    async def prepare(self) -> None:
        """Connect, create the accounts, log in and put the items on sale."""
        count = len(self.indexes)
        if not count:
            return
        options = dict(deadline=self.plan.retry_deadline)
        sellers = await open_clients(SellerClient, count, self.plan.seller, self.reactor, **options)
        buyers = await open_clients(BuyerClient, count, self.plan.buyer, self.reactor, **options)
        self.sellers = [ClientState("seller", i, c) for i, c in zip(self.indexes, sellers)]
        self.buyers = [
            ClientState("buyer", i, c, category=i % 10) for i, c in zip(self.indexes, buyers)
        ]
        await _limited([lambda s=s: self._sign_in(s) for s in self.sellers + self.buyers])
        await _limited([lambda s=s: self._stock(s) for s in self.sellers])
        words = catalog.vocabulary(self.plan.catalog_seed, self.plan.catalog_words)
        for seller, buyer in zip(self.sellers, self.buyers):
            buyer.item_ids = list(seller.item_ids)
            buyer.category = _category_of(seller.item_ids[0]) if seller.item_ids else 0
            buyer.rng.seed(buyer.index)
            seller.rng.seed(seller.index)
            for state in (seller, buyer):
                state.words = words
                state.categories = self.plan.catalog_categories
                state.drawer = catalog.WordDrawer(words, 1.0, state.rng)
        if self.workload.needs:
            await self._check_api(self.workload.needs)

    async def _sign_in(self, state: ClientState) -> None:
        username = self._username(state.role, state.index)
        # A limit is waited out for as long as a call keeps trying.
        tries = max(2, int(self.plan.retry_deadline / 0.2))
        await patiently(
            self.reactor, lambda: state.client.create_account(username, PASSWORD), tries
        )
        await patiently(self.reactor, lambda: state.client.login(username, PASSWORD), tries)

    async def _stock(self, state: ClientState) -> None:
        for number in range(self.plan.items):
            answer = await state.client.register_item_for_sale(**item_spec(state.index, number))
            state.item_ids.append(answer["item_id"])

    async def _check_api(self, api: str) -> None:
        try:
            await self.buyers[0].client.call(api, {})
        except ClientError as e:
            if e.code == UNKNOWN_API:
                raise RuntimeError(
                    f"the {self.plan.workload} workload needs {api}, which the buyer"
                    " service does not have"
                )

    async def run(self, progress: Progress) -> RunResult:
        """One run: every client makes C{plan.calls} calls."""
        if self.workload.clear_cart and self.buyers:
            await defer.gatherResults([b.client.clear_cart() for b in self.buyers])
        for state in self.sellers + self.buyers:
            state.position = 0
        recorder = Recorder()
        states = self.sellers + self.buyers
        retries = sum(s.client.connection.retries for s in states)
        cpu = _cpu()
        started = time.monotonic()
        progress.run_started(self.clients, started)
        loops = [
            _Loop(s, self.workload.seller, self.plan.calls, recorder, progress)
            for s in self.sellers
        ] + [
            _Loop(b, self.workload.buyer, self.plan.calls, recorder, progress)
            for b in self.buyers
        ]
        await defer.gatherResults([loop.start() for loop in loops], consumeErrors=True)
        finished = time.monotonic()
        progress.run_ended(self.clients, started, finished, recorder.calls)
        retries = sum(s.client.connection.retries for s in states) - retries
        return RunResult(started, finished, recorder, cpu=_cpu() - cpu, retries=retries)

    async def close(self) -> None:
        """Log out and close every connection."""
        states = self.sellers + self.buyers

        async def leave(state: ClientState) -> None:
            try:
                await state.client.logout()
            except ClientError:
                pass
            await state.client.close()

        await _limited([lambda s=s: defer.Deferred.fromCoroutine(leave(s)) for s in states])


def _category_of(item_id: str) -> int:
    return int(item_id.split("-", 1)[0])


async def drive(
    plan: Plan,
    reactor,
    progress: Optional[Progress] = None,
    share: Tuple[int, int] = (0, 1),
    sync: Optional[Sync] = None,
) -> Dict[int, List[RunResult]]:
    """Run every scenario of C{plan} with this process's C{share} of the
    clients (its number and the number of processes); the runs by scenario.

    C{sync} is awaited after each scenario's set-up and before each run,
    where the processes of one benchmark wait for each other.  A limit of
    the deployment that the set-up cannot outwait ends the benchmark with
    L{Throttled}, and any other failed call of a set-up with L{Stopped}:
    both carry the scenarios measured before.
    """
    progress = progress or Progress()
    me, processes = share
    results: Dict[int, List[RunResult]] = {}
    for clients in plan.scenarios:
        scenario = Scenario(plan, clients, range(me, clients, processes), reactor)
        try:
            await scenario.prepare()
            runs = []
            for _ in range(plan.runs):
                if sync is not None:
                    await sync()
                runs.append(await scenario.run(progress))
            results[clients] = runs
        except ClientError as e:
            stopped = e if isinstance(e, Stopped) else Stopped(e)
            stopped.results = results
            stopped.unmeasured = tuple(n for n in plan.scenarios if n not in results)
            raise stopped from None
        finally:
            await scenario.close()
    return results


__all__ = ["Plan", "Progress", "Scenario", "drive"]
