"""Writing a frame to a TCP connection without waiting for the reactor.

C{transport.write} queues the bytes and asks the reactor to say when the
socket can take them: two epoll changes and a wait of one reactor turn for
every answer, while the socket almost always has room at once.  For a
plain TCP connection with nothing queued, L{write_now} hands the bytes to
the socket straight away and queues only what it did not take.  Any other
transport (TLS, or a test's) gets an ordinary C{write}.

What the socket does not take goes through C{transport.write}, so the
transport counts it against its C{bufferSize} and pauses its streaming
producer when that is passed, exactly as if all of it had been written
there; bytes the socket took at once are the kernel's, never buffered here.
"""

import struct

from twisted.internet import tcp
from twisted.protocols.basic import Int32StringReceiver

_PLAIN = (tcp.Server, tcp.Client)
_PREFIX = struct.Struct(Int32StringReceiver.structFormat)


def framed(body: bytes) -> bytes:
    """A frame: C{body} after its length, as L{Int32StringReceiver} reads it."""
    return _PREFIX.pack(len(body)) + body


def write_now(transport, data: bytes) -> None:
    """Write C{data} to C{transport}, to its socket now where it can."""
    if (
        type(transport) not in _PLAIN
        or not transport.connected
        or transport.disconnecting
        or transport._writeDisconnected
        or (transport.producer is not None and not transport.streamingProducer)
        or transport._tempDataLen
        or len(transport.dataBuffer) > transport.offset
    ):
        transport.write(data)
        return
    sent = transport.writeSomeData(data)
    if isinstance(sent, Exception) or sent < 0:
        # The connection is gone; the reactor will notice and close it.
        return
    if sent < len(data):
        transport.write(data[sent:])


def limit_unsent(transport, size: int) -> None:
    """Let C{transport} hold at most about C{size} unsent bytes before it
    pauses its producer: the C{bufferSize} of the connection's file
    descriptor, under a TLS layer if there is one."""
    while transport is not None:
        if hasattr(transport, "bufferSize"):
            transport.bufferSize = size
            return
        transport = getattr(transport, "transport", None)


__all__ = ["framed", "limit_unsent", "write_now"]
