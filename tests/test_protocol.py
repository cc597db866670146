"""The framed protocol, byte by byte over a StringTransport."""

import json
import struct

from twisted.internet import defer
from twisted.internet.testing import StringTransport
from twisted.trial import unittest

from marketplace.frame.protocol import FrameFactory


def framed(body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + body


def frames_in(data: bytes):
    out = []
    while data:
        (length,) = struct.unpack(">I", data[:4])
        out.append(json.loads(data[4 : 4 + length]))
        data = data[4 + length :]
    return out


class ProtocolTests(unittest.SynchronousTestCase):
    def setUp(self):
        self.calls = []
        self.factory = FrameFactory(self.handle, max_frame=100)
        self.protocol = self.factory.buildProtocol(None)
        self.transport = StringTransport()
        self.protocol.makeConnection(self.transport)

    def handle(self, frame: bytes, source=None) -> defer.Deferred:
        d = defer.Deferred()
        self.calls.append((frame, d))
        return d

    def answer(self, index: int, text: str) -> None:
        self.calls[index][1].callback(json.dumps({"answer": text}).encode())

    def test_one_frame_in_pieces(self):
        data = framed(b'{"a": 1}')
        for byte in range(len(data)):
            self.protocol.dataReceived(data[byte : byte + 1])
        self.assertEqual([frame for frame, _ in self.calls], [b'{"a": 1}'])

    def test_answers_keep_request_order(self):
        self.protocol.dataReceived(framed(b"1") + framed(b"2") + framed(b"3"))
        self.assertEqual(len(self.calls), 3)
        self.answer(2, "third")
        self.answer(1, "second")
        self.assertEqual(self.transport.value(), b"")
        self.answer(0, "first")
        self.assertEqual(
            [f["answer"] for f in frames_in(self.transport.value())],
            ["first", "second", "third"],
        )

    def test_frame_too_large_answers_then_closes(self):
        self.protocol.dataReceived(framed(b"1"))
        self.protocol.dataReceived(struct.pack(">I", 101) + b"x" * 10)
        self.assertFalse(self.transport.disconnecting)
        self.protocol.dataReceived(framed(b"ignored"))
        self.assertEqual(len(self.calls), 1)
        self.answer(0, "first")
        answers = frames_in(self.transport.value())
        self.assertEqual(answers[0]["answer"], "first")
        self.assertEqual(answers[1]["type"], "error")
        self.assertEqual(answers[1]["error"]["code"], "FRAME_TOO_LARGE")
        self.assertTrue(self.transport.disconnecting)

    def test_frame_at_limit_is_accepted(self):
        self.protocol.dataReceived(framed(b"x" * 100))
        self.assertEqual(len(self.calls), 1)

    def test_connections_are_counted(self):
        self.assertEqual(len(self.factory.connections), 1)
        self.protocol.connectionLost(None)
        self.assertEqual(len(self.factory.connections), 0)

    def test_drain_waits_for_answers(self):
        self.protocol.dataReceived(framed(b"1"))
        drained = self.factory.drain()
        self.assertNoResult(drained)
        self.answer(0, "done")
        self.successResultOf(drained)
