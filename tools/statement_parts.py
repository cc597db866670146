"""What each part of AddItemToCart's statement costs PostgreSQL's CPU
(issue 29; docs/PERFORMANCE.md, "Request keys, part by part").

Differences of 5 to 10 % in a statement's cost drown in this machine's
noise (its cores' speed wanders by a sixth from one minute to the next)
when forms are measured in rounds of thousands of calls.  So this tool
prepares every form on one connection and runs them in blocks of
C{--block} calls, each cycle in a new random order, reading the backend's
time on a core from /proc/PID/schedstat (nanoseconds) around each block:
a cycle's forms ran within a second of each other, and the median over
C{--cycles} of each form's difference from the statement as the daemon
sends it says what the part it leaves out costs.

The forms (L{forms}) are the statement of a request with a key and
without one (apisql.full_text), and the keyed statement with one part
taken out of its text (not statements anyone runs: measurements of a
part).  Every call adds a unit to the cart and must be DONE.

    PYTHONPATH=. .venv/bin/python tools/statement_parts.py DSN [--setup] \
        [--block 200] [--cycles 100] [--form NAME ...]

DSN: as for tools/request_key_cost.py (whose --setup this shares), on
this machine, since the backend's time is read from /proc.
"""

import argparse
import random
import statistics
from typing import Callable, Dict, List

import psycopg2

from marketplace.postgres.database import prepared_forms
from marketplace.product import apisql
from tools import request_key_cost

#: The keyed statement, as the buyer daemon sends it on one database.
KEYED = "keyed"


def _edit(text: str, old: str, new: str) -> str:
    if old not in text:
        raise ValueError(f"the statement no longer has {old[:60]!r}: update the tool")
    return text.replace(old, new)


def without_counting(text: str) -> str:
    """The keyed statement without counting the account's keyed writes."""
    return _edit(_edit(text, apisql.counted(True), ""), apisql.OVER_SHARE, "false")


def without_filing(text: str) -> str:
    """The keyed statement without filing its answer under the key."""
    start = text.index(", recorded AS (")
    end = text.index("\nSELECT outcome, payload FROM answer")
    return text[:start] + text[end:]


def without_refusal_details(text: str) -> str:
    """The statement without the details a refusal's message needs."""
    start = text.index("ELSE (SELECT json_build_array(i.quantity")
    end = text.index("END AS payload", start)
    return text[:start] + "ELSE NULL " + text[end:]


def filed_by_a_second_join(text: str) -> str:
    """The keyed statement as it was before the answer and what is filed
    shared one aggregation (d58a8c8): each made the cart's join."""
    lines = apisql._LINES_AFTER_ADDING
    text = _edit(text, apisql._cart_after_adding(True), "")
    text = _edit(text, "(SELECT answer FROM cart)", f"{apisql.cart_json(lines)}::text")
    return _edit(text, "(SELECT filed FROM cart)", f"{apisql.cart_lines_json(lines)}::text")


def forms() -> Dict[str, str]:
    """Each form's text, by name; the first is the statement as sent."""
    keyed = apisql.full_text("AddItemToCart", "joined")
    return {
        KEYED: keyed,
        "unkeyed": apisql.full_text("AddItemToCart", "joined", keyed=False),
        "keyed, not counted": without_counting(keyed),
        "keyed, not filed": without_filing(keyed),
        "keyed, no refusal details": without_refusal_details(keyed),
        "keyed, filed by a second join": filed_by_a_second_join(keyed),
        "unkeyed, no refusal details": without_refusal_details(
            apisql.full_text("AddItemToCart", "joined", keyed=False)
        ),
    }


def summary(times: Dict[str, List[float]]) -> Dict[str, dict]:
    """Per form: the median µs per call over the cycles, and the median of
    its difference from L{KEYED} in the same cycle (µs and ratio)."""
    base = times[KEYED]
    return {
        name: {
            "median_us": round(statistics.median(values), 1),
            "difference_us": round(statistics.median(v - b for v, b in zip(values, base)), 1),
            "ratio": round(statistics.median(v / b for v, b in zip(values, base)), 3),
        }
        for name, values in times.items()
    }


def run_time_ns(pid: int) -> int:
    """The time (ns) process C{pid} has spent on a core."""
    with open(f"/proc/{pid}/schedstat") as schedstat:
        return int(schedstat.read().split()[0])


def measure(
    cursor, texts: Dict[str, str], block: int, cycles: int,
    shuffle: Callable[[list], None] = random.shuffle,
) -> Dict[str, List[float]]:
    """µs of the backend's time per call, per form, one value per cycle."""
    cursor.execute("SELECT pg_backend_pid()")
    (pid,) = cursor.fetchone()
    cursor.execute("SELECT id FROM items ORDER BY id")
    items = [row[0] for row in cursor.fetchall()]
    executes = {}
    for n, (name, text) in enumerate(texts.items()):
        prepare, executes[name] = prepared_forms(f"part_{n}", text)
        cursor.execute(prepare)
    times: Dict[str, List[float]] = {name: [] for name in texts}
    calls = 0
    for _ in range(cycles):
        cursor.execute("DELETE FROM active_cart_lines")
        order = list(texts)
        shuffle(order)
        for name in order:
            keyed = name.startswith(KEYED)
            args = [
                request_key_cost.arguments(items[(calls + n) % len(items)], keyed)
                for n in range(block)
            ]
            began = run_time_ns(pid)
            for arguments in args:
                cursor.execute(executes[name], arguments)
                row = cursor.fetchone()
            times[name].append((run_time_ns(pid) - began) / block / 1000)
            if row[0] != apisql.DONE:
                raise SystemExit(f"{name}: the statement answered {row[0]}: {row[1]}")
            calls += block
    return times


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("dsn")
    parser.add_argument("--setup", action="store_true")
    parser.add_argument("--block", type=int, default=200, help="calls per block (200)")
    parser.add_argument("--cycles", type=int, default=100, help="cycles of every form (100)")
    parser.add_argument("--form", action="append", help="only these forms (and the keyed one)")
    options = parser.parse_args(argv)
    connection = psycopg2.connect(options.dsn)
    connection.autocommit = True
    if options.setup:
        request_key_cost.setup(connection)
    texts = forms()
    if options.form:
        texts = {name: text for name, text in texts.items() if name == KEYED or name in options.form}
    cursor = connection.cursor()
    cursor.execute("SET synchronous_commit = on")
    times = measure(cursor, texts, options.block, options.cycles)
    for name, figures in summary(times).items():
        print(f"{name:32s} {figures['median_us']:7.1f} µs a call;"
              f" against {KEYED}: {figures['difference_us']:+7.1f} µs, x{figures['ratio']:.3f}")


if __name__ == "__main__":
    main()
