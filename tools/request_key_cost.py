"""What a request key costs one AddItemToCart on PostgreSQL alone (issue 28;
docs/PERFORMANCE.md, "What request keys and one path per API cost").

Replays the statement as a buyer daemon sends it on the one-database
layout (PREPARE once, then EXECUTE per call, durable commits, one
connection), with a fresh request key per call and without one (the
statement's form without a key, apisql.UNKEYED, as the daemon sends it),
alternated in rounds of C{--calls} each, and prints per round the time a
call takes (median and fastest, client round trip included), the CPU time
the server's backend spends on it (from /proc, where the server runs on
this machine) and the WAL it writes (pg_current_wal_lsn before and
after, so run it on a server nothing else writes to).  Keys, fingerprints and scope are made by the
checkout's own code (statements._key_args), so the same tool measures
any version of it.

    PYTHONPATH=. .venv/bin/python tools/request_key_cost.py DSN [--setup] [--calls N] [--rounds N]
        [--connections N --seconds S]

With C{--connections} N (up to L{SESSIONS}), N connections, each a buyer
of its own, replay it at once for C{--seconds} per round instead, and the
rounds give calls per second: where durable commits share the WAL
flushes, as in the benchmark's 100+100.

DSN: a database of its own, as a superuser (every round starts with a
CHECKPOINT, so that each pays the same full-page images); C{--setup}
applies schema.sql (every part) and makes a buyer session and three items
first.  docs/PERFORMANCE.md says how it was run (before and after, two
databases of one server, alternated) and what pg_waldump showed.
"""

import argparse
import json
import os
import statistics
import threading
import time
import uuid
from types import SimpleNamespace

import psycopg2

from marketplace.frame import dispatch
from marketplace.postgres import schema
from marketplace.postgres.database import prepared_forms
from marketplace.product import apisql, statements
from tools import cpu_per_call

ITEMS = 3
#: Buyers (one session each) that --setup makes.
SESSIONS = 64


def session_key(n: int) -> str:
    """The key buyer C{n}'s session is filed under (its id: C{n})."""
    return dispatch.session_key(str(n))


def setup(connection) -> None:
    """Every part of schema.sql, SESSIONS buyers with a live session each
    and ITEMS items."""
    parts = schema.schema_parts(schema.schema_path().read_text())
    with connection.cursor() as cursor:
        for part in ("customer", "product"):
            cursor.execute(parts[part])
        cursor.execute("TRUNCATE accounts, items, active_cart_lines CASCADE")
        for n in range(SESSIONS):
            cursor.execute(
                "INSERT INTO accounts (role, username, name, password_hash)"
                " VALUES ('buyer', %s, 'Bench', 'x') RETURNING id", (f"bench{n}",)
            )
            (account,) = cursor.fetchone()
            cursor.execute(
                "INSERT INTO sessions (key, role, account_id) VALUES (%s, 'buyer', %s)",
                (session_key(n), account),
            )
        cursor.execute(
            "INSERT INTO items (seller_id, name, category, condition, price, quantity)"
            " SELECT 1, 'item ' || n, 3, 'new', 1.25, 2000000000 FROM generate_series(1, %s) AS n",
            (ITEMS,),
        )


def arguments(item: int, keyed: bool, session: int = 0) -> dict:
    """The statement's arguments for one unit of C{item} into the cart of
    buyer C{session}, as the buyer daemon makes them; a fresh request key
    if C{keyed}."""
    key = session_key(session)
    payload = {"item_id": f"3-{item}", "quantity": 1}
    request = SimpleNamespace(
        api="AddItemToCart", payload=payload, request_key=str(uuid.uuid4()) if keyed else None
    )
    args = {"key": key, "role": "buyer", "timeout": 3600.0,
            "category": 3, "number": item, "units": 1, "rk_max": 10**9}
    args.update(statements._key_args(request, "buyer", key))
    return args


def lsn(cursor) -> int:
    cursor.execute("SELECT pg_current_wal_lsn() - '0/0'")
    return int(cursor.fetchone()[0])


def forms(name: str = "add_to_cart") -> dict:
    """PREPARE and EXECUTE of AddItemToCart's statement, by whether the
    request has a key: the forms a buyer daemon sends."""
    return {
        keyed: prepared_forms(f"{name}{'' if keyed else '_unkeyed'}",
                              apisql.full_text("AddItemToCart", "joined", keyed=keyed))
        for keyed in (True, False)
    }


def backend_cpu(cursor) -> "float | None":
    """The CPU time (s) the connection's backend has used, or None where
    the server is not on this machine."""
    cursor.execute("SELECT pg_backend_pid()")
    (pid,) = cursor.fetchone()
    if not os.path.exists(f"/proc/{pid}"):
        return None
    return cpu_per_call.cpu_seconds(pid)


def round_of(connection, execute: str, items: list, keyed: bool, calls: int) -> dict:
    """One round: µs per call (median, fastest), the backend's CPU µs per
    call and WAL bytes per call."""
    cursor = connection.cursor()
    cursor.execute("CHECKPOINT")  # every round starts with the same full-page images to write
    times = []
    start = lsn(cursor)
    cpu = backend_cpu(cursor)
    for n in range(calls):
        args = arguments(items[n % len(items)], keyed)
        began = time.perf_counter()
        cursor.execute(execute, args)
        row = cursor.fetchone()
        times.append(time.perf_counter() - began)
        if row[0] != statements.DONE:
            raise SystemExit(f"the statement answered {row[0]}: {row[1]}")
    wal = lsn(cursor) - start
    cpu_after = backend_cpu(cursor)
    return {
        "keyed": keyed,
        "median_us": round(statistics.median(times) * 1e6, 1),
        "fastest_us": round(min(times) * 1e6, 1),
        "backend_cpu_us": None if cpu is None else round((cpu_after - cpu) / calls * 1e6, 1),
        "wal_bytes_per_call": round(wal / calls, 1),
    }


def concurrent_round(dsn: str, items: list, keyed: bool, connections: int, seconds: float) -> dict:
    """One round of C{connections} buyers at once: calls per second, and
    WAL bytes per call."""
    prepare, execute = forms()[keyed]
    cursors = []
    for _ in range(connections):
        connection = psycopg2.connect(dsn)
        connection.autocommit = True
        cursor = connection.cursor()
        cursor.execute(prepare)
        cursors.append(cursor)
    cursors[0].execute("CHECKPOINT")
    start = lsn(cursors[0])
    counts = [0] * connections
    end = time.monotonic() + seconds

    def buyer(n: int) -> None:
        while time.monotonic() < end:
            cursors[n].execute(execute, arguments(items[counts[n] % len(items)], keyed, n))
            counts[n] += 1

    threads = [threading.Thread(target=buyer, args=(n,)) for n in range(connections)]
    began = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    took = time.monotonic() - began
    calls = sum(counts)
    wal = lsn(cursors[0]) - start
    for cursor in cursors:
        cursor.connection.close()
    return {"keyed": keyed, "connections": connections, "calls_per_s": round(calls / took),
            "wal_bytes_per_call": round(wal / calls, 1)}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("dsn")
    parser.add_argument("--setup", action="store_true")
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--connections", type=int, default=1)
    parser.add_argument("--seconds", type=float, default=5.0)
    options = parser.parse_args(argv)
    connection = psycopg2.connect(options.dsn)
    connection.autocommit = True
    if options.setup:
        setup(connection)
    cursor = connection.cursor()
    cursor.execute("SET synchronous_commit = on")
    cursor.execute("SELECT id FROM items ORDER BY id")
    items = [row[0] for row in cursor.fetchall()]
    if options.connections > 1:
        for n in range(options.rounds):
            for keyed in (n % 2 == 0, n % 2 == 1):
                result = concurrent_round(options.dsn, items, keyed, options.connections, options.seconds)
                print(json.dumps(result), flush=True)
        return
    by_key = forms()
    for prepare, _ in by_key.values():
        cursor.execute(prepare)
    for n in range(options.rounds):
        for keyed in (n % 2 == 0, n % 2 == 1):
            execute = by_key[keyed][1]
            print(json.dumps(round_of(connection, execute, items, keyed, options.calls)), flush=True)


if __name__ == "__main__":
    main()
