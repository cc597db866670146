"""What the metrics cost per call on the hot path, without a network or a
database: L{Dispatcher.handle_frame} on a single-statement API (one that
checks its session itself) that answers at once, with and without
L{Metrics} watching it (min of several rounds).

    .venv/bin/python -m tools.metrics_cost [--calls N] [--rounds R]
"""

import argparse
import json
import time
from typing import Optional, Sequence

from twisted.internet import defer

from marketplace.frame.dispatch import Api, Dispatcher
from marketplace.observability.metrics import Metrics


def _display_cart(call):
    return defer.succeed({"items": []})


def _dispatcher(watched: bool) -> Dispatcher:
    apis = {"DisplayCart": Api(_display_cart, checks_session=True)}
    dispatcher = Dispatcher("buyer", apis, None)
    if watched:
        Metrics().watch_dispatcher(dispatcher)
    return dispatcher


def per_call(dispatcher: Dispatcher, calls: int) -> float:
    """Microseconds per handled frame."""
    frame = json.dumps(
        {"type": "request", "api": "DisplayCart", "session_id": "s" * 43, "payload": {}}
    ).encode()
    started = time.perf_counter()
    for _ in range(calls):
        dispatcher.handle_frame(frame)
    return (time.perf_counter() - started) / calls * 1e6


def main(argv: Optional[Sequence[str]] = None) -> None:
    """Print both figures and their difference."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args(argv)
    plain, watched = _dispatcher(False), _dispatcher(True)
    without, with_ = [], []
    for _ in range(args.rounds):
        without.append(per_call(plain, args.calls))
        with_.append(per_call(watched, args.calls))
    print(
        f"per call, min of {args.rounds} x {args.calls}: without metrics"
        f" {min(without):.2f} µs, with {min(with_):.2f} µs,"
        f" cost {min(with_) - min(without):.2f} µs"
    )


if __name__ == "__main__":
    main()
