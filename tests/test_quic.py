"""The UDP listener's sending: UDP GSO batches where the kernel has it, and
one datagram at a time where it has not. A fake socket records the calls."""

from __future__ import annotations

import struct
from typing import Any

from rawserve.serving.quic import UDP_SEGMENT, QUICListener

A = ("127.0.0.1", 1)
B = ("127.0.0.1", 2)


class FakeSocket:
    def __init__(self, gso: bool = True) -> None:
        self.gso = gso
        self.calls: list[tuple[str, Any, Any]] = []

    def sendto(self, data: bytes, addr: Any) -> int:
        self.calls.append(("sendto", len(data), addr))
        return len(data)

    def sendmsg(self, buffers: list[bytes], ancdata: Any, flags: int, addr: Any) -> int:
        if not self.gso:
            raise OSError(5, "Input/output error")
        ((_level, kind, value),) = ancdata
        assert kind == UDP_SEGMENT
        size = struct.unpack("@H", value)[0]
        self.calls.append(("gso", (len(buffers[0]), size), addr))
        return len(buffers[0])


def listener(sock: FakeSocket) -> QUICListener:
    lst = QUICListener.__new__(QUICListener)
    lst.sock = sock  # type: ignore[assignment]
    lst._gso = True
    return lst


def test_equal_datagrams_to_one_address_share_a_gso_send() -> None:
    sock = FakeSocket()
    datagrams = [(b"x" * 1200, A)] * 3 + [(b"x" * 500, A), (b"y" * 1200, B), (b"z" * 80, A)]
    listener(sock).send(datagrams)
    assert sock.calls == [
        ("gso", (4100, 1200), A),  # three full segments and a shorter last one
        ("sendto", 1200, B),
        ("sendto", 80, A),
    ]


def test_without_gso_every_datagram_is_sent_alone() -> None:
    sock = FakeSocket(gso=False)
    lst = listener(sock)
    datagrams = [(b"x" * 1200, A)] * 3
    lst.send(datagrams)
    assert sock.calls == [("sendto", 1200, A)] * 3
    assert lst._gso is False
