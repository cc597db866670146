"""A real buyer daemon (twistd -n marketplace-buyer, a child process) is
killed with SIGKILL in the middle of a purchase: after the units are taken,
while the payment is on its way.  A buyer service started afterwards settles
the purchase: completed if the payment went through, undone if not."""

import json
import os
import socket
import sys
from pathlib import Path

from twisted.internet import defer, protocol, reactor
from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.protocols.basic import Int32StringReceiver
from twisted.trial import unittest

from marketplace.product import purchasedb
from tests.support import (
    PAYMENTS_SECRET,
    RunningMarketplace,
    _later,
    connect,
    layout_dsns,
    open_database,
    payload_of,
    start_marketplace,
    test_settings,
)
from tests.test_purchase import CARD, Buyer, Shop
from tests.ports import free_port  # noqa: F401 (used by other tests too)

REPOSITORY = Path(__file__).resolve().parent.parent


class _HoldingFront(Int32StringReceiver):
    """Takes AuthorizePayment, maybe passes it on, never answers it."""

    def stringReceived(self, frame: bytes) -> None:
        request = json.loads(frame)
        self.factory.requests.append(request)
        d = defer.Deferred.fromCoroutine(self.factory.hold(request))
        d.addErrback(lambda f: self.factory.held.errback(f) if not self.factory.held.called
                     else None)


class HoldingPayments(protocol.Factory):
    """Stands in front of the payments service.  With C{forward}, the
    authorisation reaches the real service (which approves it); either way
    its answer never reaches the buyer daemon.  C{held} fires once the
    request has got as far as it will."""

    protocol = _HoldingFront

    def __init__(self, upstream, forward: bool) -> None:
        self.upstream = upstream
        self.forward = forward
        self.requests = []
        self.held: defer.Deferred = defer.Deferred()

    async def hold(self, request) -> None:
        answer = None
        if self.forward:
            answer = await self.upstream.request(
                request["api"], request["payload"], request["session_id"]
            )
        if not self.held.called:
            self.held.callback(answer)


class _Child(protocol.ProcessProtocol):
    def __init__(self) -> None:
        self.ended: defer.Deferred = defer.Deferred()
        self.output = []

    def outReceived(self, data):
        self.output.append(data)

    errReceived = outReceived

    def processEnded(self, reason):
        self.ended.callback(reason.value.exitCode)


class KilledBuyerTests(unittest.TestCase):
    async def setUp(self):
        self.market = await start_marketplace(self, services=("seller", "payments"))
        self.product = await open_database(self, "product")
        self.payments_db = await open_database(self, "payments")
        self.shop = await Shop(self, self.market).open()
        self.mug = await self.shop.item("mug", 2.5, 10)

    async def spawn_buyer(self, payments_port: int):
        """twistd -n marketplace-buyer on the test databases; its port."""
        port = free_port()
        dsns = layout_dsns()
        folder = Path(self.mktemp())
        folder.mkdir(parents=True)
        env = {k: v for k, v in os.environ.items() if not k.startswith("MARKETPLACE_")}
        env["PYTHONPATH"] = str(REPOSITORY)
        env["MARKETPLACE_PAYMENTS_SECRET"] = PAYMENTS_SECRET
        twistd = str(Path(sys.executable).parent / "twistd")
        args = [
            twistd, "-n", "--pidfile=", "--logfile=-", "marketplace-buyer",
            "--listen", f"tcp:{port}:interface=127.0.0.1",
            "--customer-db", dsns["customer"], "--product-db", dsns["product"],
            "--payments", f"tcp:host=127.0.0.1:port={payments_port}",
            "--pool-size", "2",
        ]
        child = _Child()
        self.process = reactor.spawnProcess(child, twistd, args, env=env, path=str(folder))
        self.child = child

        def kill():
            if not child.ended.called:
                self.process.signalProcess("KILL")
                return child.ended

        self.addCleanup(kill)
        for _ in range(300):
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                    return port
            except OSError:
                if child.ended.called:
                    break
                await _later(0.05)
        self.fail("the buyer daemon did not start:\n" + b"".join(child.output).decode())

    async def purchase_killed_midway(self, forward: bool):
        """Start a purchase on a real buyer daemon and kill it while the
        payment is held; the pending purchase."""
        upstream = await connect(self, self.market.ports["payments"])
        holding = HoldingPayments(upstream, forward)
        listening = await TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(holding)
        self.addCleanup(listening.stopListening)
        port = await self.spawn_buyer(listening.getHost().port)
        client = await connect(self, port)
        await client.request("CreateAccount", {"username": "bea", "password": "pw-passphrase"})
        answer = await client.request("Login", {"username": "bea", "password": "pw-passphrase"})
        self.bea = Buyer(self, client, payload_of(self, answer)["session_id"])
        await self.bea.add(self.mug, 3)
        unanswered = self.bea.buy(idempotency_key="k")
        unanswered.addErrback(lambda _: None)  # the daemon dies first
        await holding.held
        self.process.signalProcess("KILL")
        await self.child.ended
        rows = await self.product.query("SELECT id, state FROM purchases")
        self.assertEqual(len(rows), 1)
        self.assertEqual(rows[0][1], purchasedb.PENDING)
        self.assertEqual(await self.shop.stock(self.mug), 7)
        self.assertEqual(len(holding.requests), 1)
        return rows[0][0]

    async def restart_buyer(self):
        settings = test_settings(
            settle_after=0.2, payments=f"tcp:host=127.0.0.1:port={self.market.ports['payments']}"
        )
        buyer = RunningMarketplace(settings, ("buyer",))
        await buyer.start()
        self.addCleanup(lambda: defer.Deferred.fromCoroutine(buyer.stop()))
        return buyer

    async def settled(self, purchase_id):
        for _ in range(200):
            purchase = await purchasedb.get(self.product, purchase_id)
            if purchase.state != purchasedb.PENDING:
                return purchase
            await _later(0.05)
        self.fail("the purchase was never settled")

    async def test_paid_purchase_completed_after_restart(self):
        purchase_id = await self.purchase_killed_midway(forward=True)
        buyer = await self.restart_buyer()
        purchase = await self.settled(purchase_id)
        self.assertEqual(purchase.state, purchasedb.COMPLETED)
        self.assertEqual(await self.shop.stock(self.mug), 7)
        self.assertEqual(await self.shop.items_sold(), 3)
        # The session lives on; its retry gets the answer it never had.
        self.bea.client = await connect(self, buyer.ports["buyer"])
        answer = payload_of(self, await self.bea.buy(idempotency_key="k"))
        self.assertEqual(answer["purchase_id"], purchase_id)
        self.assertEqual(await self.bea.cart(), [])
        self.assertEqual((await self.bea.purchases())["items_purchased"], 3)
        rows = await self.payments_db.query("SELECT count(*) FROM authorizations")
        self.assertEqual(rows[0][0], 1)

    async def test_unpaid_purchase_undone_after_restart(self):
        purchase_id = await self.purchase_killed_midway(forward=False)
        await self.restart_buyer()
        purchase = await self.settled(purchase_id)
        self.assertEqual(purchase.state, purchasedb.ABORTED)
        self.assertEqual(await self.shop.stock(self.mug), 10)
        self.assertEqual(await self.shop.items_sold(), 0)
        # The authorisation, should it still arrive, is not approved.
        late = await connect(self, self.market.ports["payments"])
        answer = await late.request("AuthorizePayment", {
            **CARD, "amount": 7.5, "idempotency_key": purchase.payment_key}, PAYMENTS_SECRET)
        self.assertFalse(payload_of(self, answer)["approved"])
