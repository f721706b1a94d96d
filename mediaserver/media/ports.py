"""RTP port pairs and the sessions that use them.

`PortPool` is the SIP core's `MediaProvider`: `allocate` binds an even RTP port
and the odd RTCP port above it before the SDP answer names them (so the answer
only ever carries ports that really are ours), and `release` closes whatever
uses them. Between the two, `open_session` hands the sockets to an
`RtpSession`. Until then, anything arriving on them is read and discarded so
an early peer gets no ICMP errors.
"""

from __future__ import annotations

import socket
from collections import deque
from dataclasses import dataclass

import structlog

from mediaserver.codecs.params import MediaOffer, NegotiatedMedia, codec
from mediaserver.media.clock import MediaClock
from mediaserver.media.session import RtpSession, SessionSettings

log = structlog.get_logger("mediaserver.media.ports")


@dataclass
class _Pair:
    rtp: socket.socket
    rtcp: socket.socket
    session: RtpSession | None = None


class PortPool:
    """Hands out RTP/RTCP port pairs from `[port_min, port_max]` and their sessions."""

    def __init__(
        self,
        address: str,
        port_min: int,
        port_max: int,
        codecs: list[str],
        clock: MediaClock,
    ) -> None:
        first = port_min + (port_min % 2)
        self._free: deque[int] = deque(range(first, port_max, 2))
        self._used: dict[int, _Pair] = {}
        self.address = address
        self.codecs = [codec(name) for name in codecs]
        self.clock = clock

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

    def open_session(
        self, offer: MediaOffer, media: NegotiatedMedia, settings: SessionSettings
    ) -> RtpSession:
        """Start the RTP session on `offer`'s sockets (once per allocation)."""
        pair = self._used[offer.port]
        if pair.session is not None:
            return pair.session
        loop = self.clock.loop
        for sock in (pair.rtp, pair.rtcp):
            loop.remove_reader(sock.fileno())
        pair.session = RtpSession(pair.rtp, pair.rtcp, media, self.clock, settings, loop.time())
        return pair.session

    def session(self, offer: MediaOffer) -> RtpSession | None:
        """The session using `offer`'s ports, if one was opened."""
        pair = self._used.get(offer.port)
        return pair.session if pair else None

    def release(self, offer: MediaOffer) -> None:
        """Close the session (if any) and the sockets; return the pair to the pool."""
        pair = self._used.pop(offer.port, None)
        if pair is None:
            return
        loop = self.clock.loop
        if pair.session is not None:
            pair.session.close()
        else:
            for sock in (pair.rtp, pair.rtcp):
                loop.remove_reader(sock.fileno())
        for sock in (pair.rtp, pair.rtcp):
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
        loop = self.clock.loop
        for sock in socks:
            loop.add_reader(sock.fileno(), _discard, sock)
        return _Pair(socks[0], socks[1])


def _discard(sock: socket.socket) -> None:
    for _ in range(64):
        try:
            sock.recv(2048)
        except OSError:
            return
