"""A measurement of issue 15's slow reader: one connection pipelines many
large SearchItemsForSale requests and never reads the answers, while another
client calls DisplayCart once a second.  It reports the resident memory of
the buyer service's processes and the other client's response times.

    python -m tools.slow_reader --launch            # a throwaway marketplace
    python -m tools.slow_reader --port 8081 --seller-port 8080

With --launch it starts C{twistd marketplace} on ports 9280-9282 (one
worker) and stops it afterwards.  Plain blocking sockets: the measuring
client must not itself be what is slow.
"""

import argparse
import json
import socket
import statistics
import struct
import threading
import time
from typing import Optional

from marketplace.bench.deploy import LocalMarketplace
from marketplace.bench.memory import listening_pids, resident_mb

PASSWORD = "slow-reader-password"


def _frame(api: str, payload: dict, session: Optional[str] = None) -> bytes:
    body = json.dumps(
        {"type": "request", "api": api, "session_id": session, "payload": payload}
    ).encode()
    return struct.pack(">I", len(body)) + body


def _call(sock: socket.socket, api: str, payload: dict, session: Optional[str] = None):
    sock.sendall(_frame(api, payload, session))
    size = struct.unpack(">I", _read(sock, 4))[0]
    return json.loads(_read(sock, size))


def _read(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise ConnectionError("the service closed the connection")
        data += chunk
    return data


def _session(port: int, api_user: str) -> str:
    with socket.create_connection(("127.0.0.1", port)) as sock:
        _call(sock, "CreateAccount", {"username": api_user, "password": PASSWORD})
        answer = _call(sock, "Login", {"username": api_user, "password": PASSWORD})
        return answer["session_id"]


def _stock(seller_port: int, items: int, category: int) -> None:
    """Put C{items} items with long names and keywords into C{category}."""
    session = _session(seller_port, f"slowseller{int(time.time())}")
    with socket.create_connection(("127.0.0.1", seller_port)) as sock:
        for n in range(items):
            answer = _call(sock, "RegisterItemForSale", {
                "item_name": f"{'x' * 26}{n:06d}", "category": category,
                "keywords": ["aaaaaaa1", "aaaaaaa2", "aaaaaaa3", "aaaaaaa4", "aaaaaaa5"],
                "condition": "used", "price": 1234567.89, "quantity": 1000000,
            }, session)
            assert answer["type"] == "response", answer


def measure(port: int, seller_port: int, requests: int, seconds: float, items: int) -> dict:
    category = 4242
    _stock(seller_port, items, category)
    session = _session(port, f"slowbuyer{int(time.time())}")
    with socket.create_connection(("127.0.0.1", port)) as sock:
        answer = _call(
            sock, "SearchItemsForSale", {"category": category, "keywords": [], "limit": 500},
            session,
        )
        answer_size = len(json.dumps(answer))
    pids = listening_pids(port)
    before = {pid: resident_mb(pid) for pid in pids}
    flood = socket.create_connection(("127.0.0.1", port))
    flood.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    request = _frame(
        "SearchItemsForSale", {"category": category, "keywords": [], "limit": 500}, session
    )
    sent = [0]

    def send_all() -> None:
        # Never reads.  The requests are small: once the service stops
        # reading, the sockets' buffers still take many of them.
        flood.settimeout(seconds)
        try:
            for _ in range(requests):
                flood.sendall(request)
                sent[0] += 1
        except OSError:
            pass

    sender = threading.Thread(target=send_all, daemon=True)
    sender.start()
    peak = dict(before)
    times = []
    other = socket.create_connection(("127.0.0.1", port))
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        started = time.monotonic()
        answer = _call(other, "DisplayCart", {}, session)
        times.append(time.monotonic() - started)
        assert answer["type"] == "response", answer
        for pid in pids:
            peak[pid] = max(peak[pid], resident_mb(pid))
        time.sleep(1.0)
    flood.close()
    other.close()
    return {
        "requests_written": sent[0],
        "answer_bytes_each": answer_size,
        "rss_before_mb": {p: round(v, 1) for p, v in before.items()},
        "rss_peak_mb": {p: round(v, 1) for p, v in peak.items()},
        "display_cart_ms": {
            "mean": round(statistics.mean(times) * 1000, 2),
            "max": round(max(times) * 1000, 2),
            "calls": len(times),
        },
    }


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--launch", action="store_true", help="start a throwaway marketplace")
    parser.add_argument("--port", type=int, default=8081, help="the buyer service's port")
    parser.add_argument("--seller-port", type=int, default=8080)
    parser.add_argument("--requests", type=int, default=10000)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--items", type=int, default=500)
    args = parser.parse_args(argv)
    market = None
    if args.launch:
        market = LocalMarketplace(base_port=9280)
        market.start()
        args.port, args.seller_port = market.buyer_port, market.seller_port
    try:
        result = measure(args.port, args.seller_port, args.requests, args.seconds, args.items)
    finally:
        if market is not None:
            market.stop()
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
