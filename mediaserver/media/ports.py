"""RTP port pairs for calls: an even RTP port and the odd RTCP port above it.

Until the media plane lands, the sockets only reserve the ports and discard
what arrives, so a peer's RTP gets no ICMP errors and the SDP answer names
ports that really are ours.
"""

from __future__ import annotations

import asyncio
import socket
from collections import deque
from dataclasses import dataclass

import structlog

from mediaserver.sip.sdp import MediaOffer, codec

log = structlog.get_logger("mediaserver.media.ports")


@dataclass
class _Pair:
    rtp: socket.socket
    rtcp: socket.socket
    received: int = 0


class PortPool:
    """Hands out RTP/RTCP port pairs from `[port_min, port_max]`."""

    def __init__(
        self,
        address: str,
        port_min: int,
        port_max: int,
        codecs: list[str],
        loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        first = port_min + (port_min % 2)
        self._free: deque[int] = deque(range(first, port_max, 2))
        self._used: dict[int, _Pair] = {}
        self.address = address
        self.codecs = [codec(name) for name in codecs]
        self._loop = loop

    def allocate(self) -> MediaOffer | None:
        """Bind the next free pair; None when the range is exhausted."""
        for _ in range(len(self._free)):
            port = self._free.popleft()
            pair = self._bind(port)
            if pair is None:
                self._free.append(port)  # taken by someone else: try it again later
                continue
            self._used[port] = pair
            return MediaOffer(address=self.address, port=port, codecs=list(self.codecs))
        log.warning("rtp_ports_exhausted")
        return None

    def release(self, offer: MediaOffer) -> None:
        """Close the pair and return it to the pool."""
        pair = self._used.pop(offer.port, None)
        if pair is None:
            return
        for sock in (pair.rtp, pair.rtcp):
            if self._loop is not None:
                self._loop.remove_reader(sock.fileno())
            sock.close()
        self._free.append(offer.port)

    @property
    def in_use(self) -> int:
        """Pairs currently allocated."""
        return len(self._used)

    def _bind(self, port: int) -> _Pair | None:
        family = socket.AF_INET6 if ":" in self.address else socket.AF_INET
        socks: list[socket.socket] = []
        try:
            for p in (port, port + 1):
                sock = socket.socket(family, socket.SOCK_DGRAM)
                socks.append(sock)
                sock.setblocking(False)
                sock.bind((self.address, p))
        except OSError:
            for sock in socks:
                sock.close()
            return None
        pair = _Pair(socks[0], socks[1])
        if self._loop is not None:
            for sock in socks:
                self._loop.add_reader(sock.fileno(), self._drain, sock, pair)
        return pair

    @staticmethod
    def _drain(sock: socket.socket, pair: _Pair) -> None:
        for _ in range(64):
            try:
                sock.recv(2048)
            except OSError:
                return
            pair.received += 1
