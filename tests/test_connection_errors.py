"""Connection problems in words: a certificate not trusted, TLS spoken to a
plaintext port and plain frames to a TLS port, nothing listening; each its
own message, at once (within 2 seconds), without retrying in vain."""


from twisted.internet import protocol, reactor
from twisted.trial import unittest

from marketplace.clientlib import BuyerClient, ClientError
from marketplace.contract.errors import UNAVAILABLE
from marketplace.clientlib import tls
from marketplace.daemon.devcerts import make_dev_certs
from tests.support import empty_databases, start_plain_and_tls, test_settings
from tests.ports import free_port  # noqa: F401 (used by other tests too)


class ConnectionProblemTests(unittest.TestCase):
    async def setUp(self):
        folder = self.mktemp()
        self.certs = make_dev_certs(folder)
        self.other_ca = make_dev_certs(folder + "-other")
        await empty_databases(self)
        ports = await start_plain_and_tls(self, ("buyer",), self.certs, test_settings())
        self.ports = {kind: port for (_, kind), port in ports.items()}

    async def problem(self, endpoint, where: str, probe: bool = False) -> str:
        """The message of the first failure of a client of C{endpoint}, which
        must come within 2 seconds."""
        client = BuyerClient(endpoint, reactor=reactor, where=where)
        self.addCleanup(client.close)
        started = reactor.seconds()
        d = client.check_username("sam") if probe else client.connect(1.0)
        error = await self.assertFailure(d, ClientError)
        self.assertEqual(error.code, UNAVAILABLE)
        self.assertLess(reactor.seconds() - started, 2.0)
        return error.message

    async def test_certificate_not_trusted(self):
        endpoint = tls.client_endpoint(
            reactor, "localhost", self.ports["tls"], self.other_ca["ca_cert"]
        )
        message = await self.problem(endpoint, "localhost:1")
        self.assertIn("the certificate of localhost:1 is not trusted", message)
        # The same for a request, which is not sent again in vain.
        message = await self.problem(endpoint, "localhost:1", probe=True)
        self.assertIn("is not trusted", message)

    async def test_tls_to_a_plaintext_port(self):
        endpoint = tls.client_endpoint(
            reactor, "localhost", self.ports["tcp"], self.certs["ca_cert"]
        )
        message = await self.problem(endpoint, "localhost:2")
        self.assertIn(
            "localhost:2 does not speak TLS: is it a plaintext port?", message
        )

    async def test_plain_frames_to_a_tls_port(self):
        endpoint = f"tcp:host=127.0.0.1:port={self.ports['tls']}"
        message = await self.problem(endpoint, "localhost:3", probe=True)
        self.assertIn("it may be a TLS port: connect with --ca-cert", message)

    async def test_nothing_listening(self):
        endpoint = f"tcp:host=127.0.0.1:port={free_port()}"
        message = await self.problem(endpoint, "localhost:4")
        self.assertIn(
            "nothing is listening at localhost:4 (the connection was refused)", message
        )

    async def test_the_right_ca_works(self):
        endpoint = tls.client_endpoint(
            reactor, "localhost", self.ports["tls"], self.certs["ca_cert"]
        )
        client = BuyerClient(endpoint, reactor=reactor)
        self.addCleanup(client.close)
        answer = await client.check_username("sam")
        self.assertEqual(answer, {"username": "sam", "available": True})
        await client.create_account("sam", "correct-horse-7")
        answer = await client.check_username("sam")
        self.assertEqual(answer, {"username": "sam", "available": False})
        e = await self.assertFailure(client.check_username("two words"), ClientError)
        self.assertEqual(e.code, "BAD_REQUEST")


class _TlsAlert(protocol.Protocol):
    """What a TLS server that sends an alert does with plain frames."""

    def dataReceived(self, data: bytes) -> None:
        self.transport.write(b"\x15\x03\x01\x00\x02\x02\x46")
        self.transport.loseConnection()


class TlsAlertTests(unittest.TestCase):
    async def test_plain_frames_answered_with_a_tls_alert(self):
        factory = protocol.Factory.forProtocol(_TlsAlert)
        port = reactor.listenTCP(0, factory, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        endpoint = f"tcp:host=127.0.0.1:port={port.getHost().port}"
        client = BuyerClient(endpoint, reactor=reactor, where="shop:8443")
        self.addCleanup(client.close)
        e = await self.assertFailure(client.check_username("sam"), ClientError)
        self.assertEqual(e.code, UNAVAILABLE)
        self.assertEqual(
            e.message,
            "shop:8443 speaks TLS, not plain frames: connect with --ca-cert CA.pem"
            " (or a tls: endpoint)",
        )
        # At once: not sent again on a new connection.
        self.assertEqual(client.connection.connections_made, 1)
