"""The services over TLS, next to plain TCP, with the development
certificates: clients that verify the server against the right CA are
served; a client trusting another CA is not."""

import io
import sys
from pathlib import Path

from twisted.internet import defer, reactor
from twisted.internet.endpoints import (
    TCP4ClientEndpoint,
    clientFromString,
    connectProtocol,
    wrapClientTLS,
)
from twisted.internet.ssl import optionsForClientTLS
from twisted.trial import unittest

from marketplace.clientlib import BuyerClient, ClientError, SellerClient
from marketplace.clientlib import tls
from marketplace.daemon.devcerts import main as devcerts_main
from marketplace.daemon.devcerts import make_dev_certs
from tests.support import (
    WireClient,
    connect,
    empty_databases,
    payload_of,
    start_plain_and_tls,
    test_settings,
)
from tests.test_cli import run_program


class TlsTests(unittest.TestCase):
    async def setUp(self):
        folder = self.mktemp()
        self.certs = make_dev_certs(folder)
        self.other_ca = make_dev_certs(folder + "-other")
        await empty_databases(self)
        ports = await start_plain_and_tls(
            self, ("seller", "buyer"), self.certs, test_settings()
        )
        self.tls_ports = {name: port for (name, kind), port in ports.items() if kind == "tls"}
        self.tcp_ports = {name: port for (name, kind), port in ports.items() if kind == "tcp"}
        self.assertEqual(sorted(self.tls_ports), ["buyer", "seller"])
        self.assertEqual(sorted(self.tcp_ports), ["buyer", "seller"])

    def client(self, cls, endpoint):
        client = cls(endpoint, deadline=10, max_retries=0)
        self.addCleanup(client.close)
        return client

    async def test_client_library_over_tls_with_trust_roots(self):
        seller = self.client(
            SellerClient,
            tls.client_description("localhost", self.tls_ports["seller"], self.certs["ca_dir"]),
        )
        await seller.create_account("sal", "pw-passphrase")
        await seller.login("sal", "pw-passphrase")
        item = await seller.register_item_for_sale("Lamp", 1, ["lamp"], "new", "5", 3)
        # The same data over the plain TCP listener of the same service.
        plain = await connect(self, self.tcp_ports["seller"])
        answer = await plain.request("DisplayItemsForSale", {}, seller.session_id)
        self.assertEqual([i["item_id"] for i in payload_of(self, answer)["items"]], [item["item_id"]])

    async def test_ca_cert_file_hook(self):
        """What a terminal program's --ca-cert FILE does."""
        endpoint = tls.client_endpoint(
            reactor, "localhost", self.tls_ports["buyer"], self.certs["ca_cert"]
        )
        buyer = self.client(BuyerClient, endpoint)
        await buyer.create_account("bea", "pw-passphrase")
        await buyer.login("bea", "pw-passphrase")
        self.assertEqual((await buyer.display_cart())["cart"], [])

    async def test_terminal_program_with_ca_cert(self):
        port = str(self.tls_ports["seller"])
        script = "register sam -p pw-passphrase\nlogin sam -p pw-passphrase\nitems\n"
        status, out, err = await run_program(
            "marketplace-seller-cli", ["--ca-cert", self.certs["ca_cert"], "localhost", port], script
        )
        self.assertEqual((status, err), (0, ""), out)
        self.assertIn("Logged in as sam", out)
        status, out, err = await run_program(
            "marketplace-seller-cli",
            ["--ca-cert", self.other_ca["ca_cert"], "localhost", port],
            "login sam -p pw-passphrase\n",
        )
        self.assertEqual(status, 1, out + err)
        self.assertNotIn("Logged in", out)

    async def test_wrong_ca_is_refused(self):
        for endpoint in (
            tls.client_endpoint(
                reactor, "localhost", self.tls_ports["buyer"], self.other_ca["ca_cert"]
            ),
            clientFromString(
                reactor,
                tls.client_description(
                    "localhost", self.tls_ports["buyer"], self.other_ca["ca_dir"]
                ),
            ),
        ):
            wire = await connectProtocol(endpoint, WireClient())
            with self.assertRaises(Exception):
                await wire.request("Login", {"username": "x", "password": "y"})
            await wire.closed
        buyer = self.client(
            BuyerClient,
            tls.client_endpoint(
                reactor, "localhost", self.tls_ports["buyer"], self.other_ca["ca_cert"]
            ),
        )
        with self.assertRaises(ClientError) as caught:
            await buyer.create_account("eve", "pw-passphrase")
        self.assertEqual(caught.exception.code, "UNAVAILABLE")

    async def test_wrong_host_name_is_refused(self):
        """The certificate is for localhost and loopback addresses only."""
        # The right port and CA, under a name the certificate does not have.
        endpoint = wrapClientTLS(
            optionsForClientTLS(
                "marketplace.invalid", trustRoot=tls.trust_root(self.certs["ca_cert"])
            ),
            TCP4ClientEndpoint(reactor, "127.0.0.1", self.tls_ports["buyer"]),
        )
        wire = await connectProtocol(endpoint, WireClient())
        with self.assertRaises(Exception):
            await wire.request("Login", {"username": "x", "password": "y"})

    async def test_plain_tcp_to_the_tls_port_gets_nothing(self):
        wire = await connect(self, self.tls_ports["buyer"])
        d = wire.request("Login", {"username": "x", "password": "y"})
        wire.transport.loseConnection()
        with self.assertRaises(Exception):
            await d
        await defer.succeed(None)


class DevCertsTests(unittest.SynchronousTestCase):
    def test_command_writes_once(self):
        folder = self.mktemp()
        self.patch(sys, "stdout", io.StringIO())
        self.assertEqual(devcerts_main([folder, "--host", "shop.example"]), 0)
        first = Path(folder, "server.pem").read_bytes()
        self.assertEqual(devcerts_main([folder]), 0)
        self.assertEqual(Path(folder, "server.pem").read_bytes(), first)
        self.assertEqual(Path(folder, "server.key").stat().st_mode & 0o077, 0)
        self.assertEqual(Path(folder, "ca.key").stat().st_mode & 0o077, 0)
        self.assertIn(b"BEGIN CERTIFICATE", Path(folder, "ca", "ca.pem").read_bytes())
