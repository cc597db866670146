"""One request walked through the house: the files of marketplace/ that
an AddItemToCart runs code in, from the frame arriving to its answer
leaving, in the order it first enters each (docs/DESIGN.md walks the same
path).  A request that wanders through many files, or leaves a folder and
comes back into it, is hard to follow; this test keeps the walk short."""

import sys
from pathlib import Path

from twisted.python import log
from twisted.trial import unittest

import marketplace
from tests.support import connect, payload_of, start_marketplace
from tests.test_seller_api import PHONE_CASE

PACKAGE = Path(marketplace.__file__).resolve().parent

#: The most files one AddItemToCart may run code in.
MOST_FILES = 6


def _client_side(frame) -> bool:
    """Whether C{frame} runs for the test's client (the client library or
    the tests call it) rather than for the service."""
    while frame is not None:
        parts = Path(frame.f_code.co_filename).parts
        if "clientlib" in parts or "tests" in parts:
            return True
        frame = frame.f_back
    return False


def walk(trace: list) -> list:
    """The files of C{trace} (code files in call order) in the order first
    entered, as paths inside marketplace/."""
    seen = []
    for name in trace:
        if name not in seen:
            seen.append(name)
    return seen


class RequestPathTests(unittest.TestCase):
    async def test_add_item_to_cart(self):
        market = await start_marketplace(self, services=("seller", "buyer"))
        seller = await connect(self, market.ports["seller"])
        buyer = await connect(self, market.ports["buyer"])
        for client, name in ((seller, "sam"), (buyer, "bob")):
            payload_of(self, await client.request(
                "CreateAccount", {"username": name, "password": "correct-horse-7"}))
        seller_session = (await seller.request(
            "Login", {"username": "sam", "password": "correct-horse-7"}))["session_id"]
        item = payload_of(self, await seller.request(
            "RegisterItemForSale", PHONE_CASE, seller_session))["item_id"]
        session = (await buyer.request(
            "Login", {"username": "bob", "password": "correct-horse-7"}))["session_id"]
        request = {"item_id": item, "quantity": 1}
        payload_of(self, await buyer.request("AddItemToCart", request, session))

        trace = []

        def profile(frame, event, arg):
            if event == "call":
                path = Path(frame.f_code.co_filename)
                if PACKAGE in path.parents and not _client_side(frame):
                    trace.append(str(path.relative_to(PACKAGE)))

        # Without a request key and with one (as the client library sends).
        for extra in ({}, {"request_key": "walk-1"}):
            del trace[:]
            sys.setprofile(profile)
            try:
                answer = await buyer.request("AddItemToCart", request, session, **extra)
            finally:
                sys.setprofile(None)
            payload_of(self, answer)
            files = walk(trace)
            path = " -> ".join(files)
            log.msg(f"AddItemToCart {extra or 'without a key'}: {path}")
            self.assertLessEqual(len(files), MOST_FILES, path)
            folders = [str(Path(f).parent) for f in files]
            entered = [f for n, f in enumerate(folders) if n == 0 or folders[n - 1] != f]
            self.assertEqual(len(entered), len(set(entered)), f"a folder entered twice: {path}")
