"""The limits of limits.py on the framed protocol, byte by byte over a
StringTransport with a fake clock: requests in flight, open connections,
frames that stall half-way; and the repeatable --listen options."""

import json

from twisted.internet import defer, task
from twisted.internet.testing import StringTransport
from twisted.python import usage
from twisted.trial import unittest

from marketplace.frame.limits import Limits
from marketplace.frame.protocol import FrameFactory
from marketplace.daemon.options import AllOptions, BuyerOptions, SellerOptions
from tests.test_protocol import framed, frames_in


class LimitsTests(unittest.SynchronousTestCase):
    def setUp(self):
        self.clock = task.Clock()
        # No idle timeout here (see IdleTests): these tests count timers.
        self.limits = Limits(
            max_connections=3,
            max_in_flight=4,
            frame_timeout=30.0,
            clock=self.clock,
            idle_timeout=0,
        )
        self.calls = []
        self.factory = FrameFactory(self.handle, max_frame=1000, limits=self.limits)

    def handle(self, frame: bytes, source=None) -> defer.Deferred:
        d = defer.Deferred()
        self.calls.append((frame, d))
        return d

    def connect(self):
        protocol = self.factory.buildProtocol(None)
        transport = StringTransport()
        protocol.makeConnection(transport)
        return protocol, transport

    def answer(self, index: int) -> None:
        frame, d = self.calls[index]
        d.callback(json.dumps({"answer": frame.decode()}).encode())

    def test_pipelining_beyond_the_cap_pauses_reading(self):
        """Requests beyond max_in_flight wait unread; none is refused, and
        every answer comes, in order, as answers drain."""
        protocol, transport = self.connect()
        protocol.dataReceived(b"".join(framed(b"%d" % i) for i in range(10)))
        self.assertEqual(len(self.calls), 4)
        self.assertEqual(transport.producerState, "paused")
        self.answer(1)
        self.assertEqual(len(self.calls), 4)  # the first is still worked on
        self.answer(0)
        # Two answers out, so two more requests read; then paused again.
        self.assertEqual(len(self.calls), 6)
        self.assertEqual(transport.producerState, "paused")
        for i in range(2, 10):
            self.assertGreater(len(self.calls), i, "request %d was never read" % i)
            self.answer(i)
        self.assertEqual(
            [a["answer"] for a in frames_in(transport.value())],
            [str(i) for i in range(10)],
        )
        self.assertEqual(transport.producerState, "producing")
        self.assertFalse(transport.disconnecting)

    def test_one_connection_pausing_leaves_others_be(self):
        greedy, greedy_transport = self.connect()
        greedy.dataReceived(b"".join(framed(b"g") for _ in range(20)))
        honest, honest_transport = self.connect()
        honest.dataReceived(framed(b"h"))
        self.assertEqual(len(self.calls), 5)
        self.answer(4)
        self.assertEqual(frames_in(honest_transport.value()), [{"answer": "h"}])
        self.assertEqual(honest_transport.producerState, "producing")
        self.assertEqual(greedy_transport.producerState, "paused")

    def test_connections_beyond_the_cap_are_refused_when_none_is_idle(self):
        """With every connection working on a request, a new one is answered
        RATE_LIMITED and closed."""
        open_ = [self.connect() for _ in range(3)]
        for protocol, _ in open_:
            protocol.dataReceived(framed(b"busy"))
        self.assertEqual(len(self.factory.connections), 3)
        refused, refused_transport = self.connect()
        self.assertTrue(refused_transport.disconnecting)
        [answer] = frames_in(refused_transport.value())
        self.assertEqual(answer["type"], "error")
        self.assertEqual(answer["error"]["code"], "RATE_LIMITED")
        refused.dataReceived(framed(b"ignored"))
        refused.connectionLost(None)
        self.assertEqual(len(self.calls), 3)
        self.assertEqual(len(self.factory.connections), 3)
        # A slot freed lets the next one in.
        open_[0][0].connectionLost(None)
        admitted, admitted_transport = self.connect()
        self.assertFalse(admitted_transport.disconnecting)
        admitted.dataReceived(framed(b"x"))
        self.assertEqual(len(self.calls), 4)

    def test_connection_cap_is_per_service(self):
        """A flood of one service's port leaves another service's be."""
        other = FrameFactory(self.handle, max_frame=1000, limits=self.limits)
        for _ in range(3):
            protocol, _ = self.connect()
            protocol.dataReceived(framed(b"busy"))
        protocol = other.buildProtocol(None)
        transport = StringTransport()
        protocol.makeConnection(transport)
        self.assertFalse(transport.disconnecting)
        self.assertEqual(len(other.connections), 1)

    def test_half_a_frame_that_stalls_is_closed(self):
        protocol, transport = self.connect()
        protocol.dataReceived(framed(b"whole") + framed(b"half a frame")[:7])
        self.assertEqual(len(self.calls), 1)
        self.clock.advance(29)
        protocol.dataReceived(b"x")  # trickling does not buy more time
        self.assertFalse(transport.disconnecting)
        self.clock.advance(1)
        self.assertTrue(transport.disconnecting)
        self.assertEqual(len(self.calls), 1)

    def test_whole_frames_never_time_out(self):
        protocol, transport = self.connect()
        protocol.dataReceived(framed(b"one"))
        self.clock.advance(3600)
        self.assertFalse(transport.disconnecting)
        self.assertEqual(self.clock.getDelayedCalls(), [])
        data = framed(b"two")
        protocol.dataReceived(data[:3])
        self.clock.advance(10)
        protocol.dataReceived(data[3:])
        self.clock.advance(3600)
        self.assertFalse(transport.disconnecting)
        self.assertEqual(len(self.calls), 2)

    def test_a_frame_completed_restarts_the_timer(self):
        """A client streaming pipelined frames whose reads end mid-frame is
        making progress, and is not closed."""
        protocol, transport = self.connect()
        data = b"".join(framed(b"%d" % i) for i in range(3))
        protocol.dataReceived(data[:5])
        self.clock.advance(20)
        protocol.dataReceived(data[5:12])
        self.clock.advance(20)
        self.assertFalse(transport.disconnecting)
        protocol.dataReceived(data[12:])
        self.assertEqual(len(self.calls), 3)

    def test_no_timeout_while_paused_by_the_server(self):
        protocol, transport = self.connect()
        protocol.dataReceived(b"".join(framed(b"%d" % i) for i in range(6)))
        self.assertEqual(transport.producerState, "paused")
        self.clock.advance(3600)
        self.assertFalse(transport.disconnecting)

    def test_timer_stops_with_the_connection(self):
        protocol, transport = self.connect()
        protocol.dataReceived(b"\x00\x00")
        self.assertEqual(len(self.clock.getDelayedCalls()), 1)
        protocol.connectionLost(None)
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertEqual(len(self.factory.connections), 0)


class IdleTests(unittest.SynchronousTestCase):
    """Idle connections: closed after the idle timeout, and the first to
    give way when a service is at its cap."""

    def setUp(self):
        self.clock = task.Clock()
        self.limits = Limits(
            max_connections=3, max_in_flight=4, clock=self.clock, idle_timeout=300.0
        )
        self.calls = []
        self.factory = FrameFactory(self.handle, max_frame=1000, limits=self.limits)
        # As a listening port does: idle connections are swept only then.
        self.factory.doStart()

    def handle(self, frame: bytes, source=None) -> defer.Deferred:
        d = defer.Deferred()
        self.calls.append(d)
        return d

    def connect(self):
        protocol = self.factory.buildProtocol(None)
        transport = StringTransport()
        protocol.makeConnection(transport)
        return protocol, transport

    def served(self):
        """A connection that has sent a request and had its answer."""
        protocol, transport = self.connect()
        protocol.dataReceived(framed(b"hello"))
        self.calls[-1].callback(b"{}")
        return protocol, transport

    def test_silent_connection_gives_way_first(self):
        """At the cap, a connection that never sent a request gives way
        before an older one that did."""
        _, old_client = self.served()
        _, silent = self.connect()
        _, later = self.served()
        _, new = self.connect()
        self.assertFalse(new.disconnecting)
        self.assertTrue(silent.disconnecting)
        self.assertEqual(silent.value(), b"")
        self.assertFalse(old_client.disconnecting)
        self.assertFalse(later.disconnecting)
        self.assertEqual(len(self.factory.connections), 3)

    def test_least_recently_active_gives_way(self):
        first, first_transport = self.served()
        _, second_transport = self.served()
        _, third_transport = self.served()
        first.dataReceived(framed(b"again"))
        self.calls[-1].callback(b"{}")
        _, new = self.connect()
        self.assertFalse(new.disconnecting)
        self.assertTrue(second_transport.disconnecting)
        self.assertFalse(first_transport.disconnecting)
        self.assertFalse(third_transport.disconnecting)

    def test_busy_connection_never_gives_way(self):
        busy, busy_transport = self.connect()
        busy.dataReceived(framed(b"working"))
        _, idle_transport = self.served()
        self.served()
        self.connect()
        self.assertFalse(busy_transport.disconnecting)
        self.assertTrue(idle_transport.disconnecting)

    def test_idle_connection_closed_after_the_timeout(self):
        _, silent = self.connect()
        talker, talking = self.connect()
        waiting, waiting_transport = self.connect()
        waiting.dataReceived(framed(b"slow"))
        for _ in range(10):
            self.clock.advance(60)
            talker.dataReceived(framed(b"tick"))
            self.calls[-1].callback(b"{}")
        self.assertTrue(silent.disconnecting)
        self.assertFalse(talking.disconnecting)
        self.assertFalse(waiting_transport.disconnecting, "closed with an answer pending")
        self.calls[0].callback(b"{}")
        for _ in range(12):
            self.clock.advance(30)
        self.assertTrue(waiting_transport.disconnecting)
        self.assertTrue(talking.disconnecting)

    def test_not_before_the_timeout(self):
        _, transport = self.connect()
        for _ in range(9):
            self.clock.advance(30)
        self.assertFalse(transport.disconnecting)

    def test_no_sweep_unless_listening(self):
        """Idle connections are swept while a port listens, not while the
        service stops (it drains and closes its connections itself)."""
        _, transport = self.connect()
        self.factory.doStop()
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.clock.advance(1000)
        self.assertFalse(transport.disconnecting)

    def test_no_timer_without_connections(self):
        protocol, _ = self.connect()
        self.assertEqual(len(self.clock.getDelayedCalls()), 1)
        protocol.connectionLost(None)
        self.assertEqual(self.clock.getDelayedCalls(), [])


class ListenOptionsTests(unittest.SynchronousTestCase):
    """--listen (and the all-in-one's --*-listen) may be given many times."""

    def test_default_kept(self):
        options = BuyerOptions()
        options.parseOptions([])
        self.assertEqual(options["listen"], ["tcp:8081"])

    def test_repeated(self):
        options = SellerOptions()
        options.parseOptions(
            ["--listen", "tcp:9000", "--listen", "ssl:9443:privateKey=k.pem:certKey=c.pem"]
        )
        self.assertEqual(
            options["listen"], ["tcp:9000", "ssl:9443:privateKey=k.pem:certKey=c.pem"]
        )

    def test_all_in_one(self):
        options = AllOptions()
        options.parseOptions(["--buyer-listen", "tcp:1", "--buyer-listen", "tcp:2"])
        self.assertEqual(options["buyer-listen"], ["tcp:1", "tcp:2"])
        self.assertEqual(options["seller-listen"], ["tcp:8080"])

    def test_limits(self):
        options = BuyerOptions()
        options.parseOptions(
            ["--max-connections", "7", "--max-in-flight", "2", "--frame-timeout", "1.5",
             "--idle-timeout", "60"]
        )
        self.assertEqual(
            (
                options.settings.limits.max_connections,
                options.settings.limits.max_in_flight,
                options.settings.limits.frame_timeout,
                options.settings.limits.idle_timeout,
            ),
            (7, 2, 1.5, 60.0),
        )

    def test_idle_timeout_default(self):
        options = SellerOptions()
        options.parseOptions([])
        self.assertEqual(options.settings.limits.idle_timeout, 300.0)

    def test_bad_limits(self):
        for args in (["--max-connections", "0"], ["--frame-timeout", "soon"],
                     ["--idle-timeout", "-1"]):
            self.assertRaises(usage.UsageError, BuyerOptions().parseOptions, args)
