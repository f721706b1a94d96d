"""SIP transports on asyncio: UDP, TCP and TLS.

The transports only move bytes: every received message goes to one callback
with the `Target` it came from (for TCP/TLS the connection id, so answers and
in-dialog requests reuse the connection), and `send` puts bytes on the wire.
Framing on streams uses Content-Length (`StreamFramer`).
"""

from __future__ import annotations

import asyncio
import ipaddress
import itertools
import socket
import ssl
import sys
from collections.abc import Callable
from typing import cast

import structlog

from mediaserver.sip.message import DEFAULT_LIMITS, Limits, MessageError, StreamFramer
from mediaserver.sip.transaction import Target

log = structlog.get_logger("mediaserver.sip.transport")

OnMessage = Callable[[bytes, Target], None]

#: Idle stream connections are closed after this many seconds without traffic.
IDLE_TIMEOUT = 300.0


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


#: UDP receive buffer we ask for: rides out a pause of the event loop (a full
#: garbage collection can take 100 ms under load) without the kernel dropping
#: datagrams. Linux's default (~208 KiB) holds only ~100 small datagrams.
UDP_RECEIVE_BUFFER = 8 * 1024 * 1024


def _grow_receive_buffer(sock: socket.socket) -> None:
    # SO_RCVBUFFORCE ignores net.core.rmem_max but needs CAP_NET_ADMIN;
    # plain SO_RCVBUF is capped at rmem_max.
    # Python does not export SO_RCVBUFFORCE everywhere; it is 33 on Linux.
    force = getattr(socket, "SO_RCVBUFFORCE", 33 if sys.platform == "linux" else None)
    for option in (force, socket.SO_RCVBUF):
        if option is None:
            continue
        try:
            sock.setsockopt(socket.SOL_SOCKET, option, UDP_RECEIVE_BUFFER)
            return
        except OSError:
            continue


class _Udp(asyncio.DatagramProtocol):
    def __init__(self, on_message: OnMessage, sock_id: int) -> None:
        self.on_message = on_message
        self.sock_id = sock_id
        self.transport: asyncio.DatagramTransport | None = None
        self.family = socket.AF_INET

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports do not subclass asyncio's, so no isinstance check
        self.transport = cast(asyncio.DatagramTransport, transport)
        sock = transport.get_extra_info("socket")
        self.family = sock.family
        _grow_receive_buffer(sock)

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        if data.strip(b"\r\n") == b"":
            return  # keep-alive (RFC 5626 CRLF ping over UDP)
        self.on_message(data, Target("udp", str(addr[0]), int(addr[1]), self.sock_id))

    def error_received(self, exc: Exception) -> None:
        # ICMP errors from earlier sends: nothing to do but note them.
        log.debug("udp_error", error=str(exc))


class _Stream(asyncio.Protocol):
    def __init__(self, owner: Transports, name: str, limits: Limits) -> None:
        self.owner = owner
        self.name = name
        self.framer = StreamFramer(limits)
        self.transport: asyncio.Transport | None = None
        self.conn_id = next(owner.conn_ids)
        self.peer: tuple[str, int] = ("", 0)
        self.last_activity = 0.0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        peer = transport.get_extra_info("peername") or ("", 0)
        self.peer = (str(peer[0]), int(peer[1]))
        self.owner.connections[self.conn_id] = self
        self.owner.by_peer[(self.name, *self.peer)] = self
        self.last_activity = asyncio.get_running_loop().time()

    def connection_lost(self, exc: Exception | None) -> None:
        self.owner.connections.pop(self.conn_id, None)
        if self.owner.by_peer.get((self.name, *self.peer)) is self:
            del self.owner.by_peer[(self.name, *self.peer)]

    def data_received(self, data: bytes) -> None:
        self.last_activity = asyncio.get_running_loop().time()
        try:
            messages = self.framer.feed(data)
        except MessageError as exc:
            # A stream we cannot frame cannot be resynchronised: close it.
            log.warning("stream_framing_error", reason=exc.reason, peer=self.peer)
            assert self.transport is not None
            self.transport.close()
            return
        target = Target(self.name, self.peer[0], self.peer[1], self.conn_id)
        for msg in messages:
            self.owner.on_message(msg, target)

    def send(self, data: bytes) -> None:
        assert self.transport is not None
        self.last_activity = asyncio.get_running_loop().time()
        self.transport.write(data)


class Transports:
    """Every listening socket and stream connection of one server."""

    def __init__(self, on_message: OnMessage, limits: Limits = DEFAULT_LIMITS) -> None:
        self.on_message = on_message
        self.limits = limits
        self.conn_ids = itertools.count(1)
        self.connections: dict[int, _Stream] = {}
        self.by_peer: dict[tuple[str, str, int], _Stream] = {}
        self._udp: dict[int, _Udp] = {}
        self._servers: list[asyncio.Server] = []
        self._ssl_client: ssl.SSLContext | None = None
        self._reaper: asyncio.Task[None] | None = None

    async def listen_udp(self, host: str, port: int) -> tuple[str, int]:
        """Open a UDP socket; returns the bound address."""
        loop = asyncio.get_running_loop()
        sock_id = next(self.conn_ids)
        transport, proto = await loop.create_datagram_endpoint(
            lambda: _Udp(self.on_message, sock_id), local_addr=(host, port)
        )
        bound = transport.get_extra_info("sockname")
        self._udp[sock_id] = proto
        return host, int(bound[1])

    async def listen_stream(
        self, name: str, host: str, port: int, ssl_ctx: ssl.SSLContext | None = None
    ) -> tuple[str, int]:
        """Open a TCP (or TLS when `ssl_ctx` is given) listener."""
        loop = asyncio.get_running_loop()
        server = await loop.create_server(
            lambda: _Stream(self, name, self.limits), host, port, ssl=ssl_ctx, reuse_address=True
        )
        self._servers.append(server)
        if self._reaper is None:
            self._reaper = asyncio.create_task(self._reap_idle())
        return host, int(server.sockets[0].getsockname()[1])

    def send(self, data: bytes, target: Target) -> None:
        """Send to `target`; streams reuse the connection when it is still open."""
        if target.transport == "udp":
            proto = self._udp_for(target)
            if proto is None or proto.transport is None:
                log.warning("no_udp_socket", target=target)
                return
            if _is_ip(target.host):
                proto.transport.sendto(data, (target.host, target.port))
            else:
                # sendto() with a name would resolve it on the event loop, blocking it.
                asyncio.get_running_loop().create_task(self._resolve_and_send(proto, data, target))
            return
        conn = self.connections.get(target.conn_id or -1) or self.by_peer.get(
            (target.transport, target.host, target.port)
        )
        if conn is not None and conn.transport is not None and not conn.transport.is_closing():
            conn.send(data)
            return
        asyncio.get_running_loop().create_task(self._connect_and_send(data, target))

    def _udp_for(self, target: Target) -> _Udp | None:
        """The socket the peer talked to, else the first of the right address family."""
        proto = self._udp.get(target.conn_id or -1)
        if proto is not None:
            return proto
        family = socket.AF_INET6 if ":" in target.host else socket.AF_INET
        matching = [p for p in self._udp.values() if p.family == family]
        candidates = matching or list(self._udp.values())
        return candidates[0] if candidates else None

    async def _resolve_and_send(self, proto: _Udp, data: bytes, target: Target) -> None:
        loop = asyncio.get_running_loop()
        try:
            infos = await asyncio.wait_for(
                loop.getaddrinfo(target.host, target.port, type=socket.SOCK_DGRAM), timeout=5.0
            )
        except (TimeoutError, OSError) as exc:
            log.warning("resolve_failed", host=target.host, error=str(exc))
            return
        if proto.transport is not None and infos:
            proto.transport.sendto(data, infos[0][4][:2])

    async def _connect_and_send(self, data: bytes, target: Target) -> None:
        loop = asyncio.get_running_loop()
        ctx = None
        if target.transport == "tls":
            if self._ssl_client is None:
                self._ssl_client = ssl.create_default_context()
            ctx = self._ssl_client
        try:
            _, proto = await asyncio.wait_for(
                loop.create_connection(
                    lambda: _Stream(self, target.transport, self.limits),
                    target.host,
                    target.port,
                    ssl=ctx,
                ),
                timeout=5.0,
            )
        except (TimeoutError, OSError) as exc:
            # The transaction's timers notice the silence (timer B/F).
            log.warning("connect_failed", target=f"{target.host}:{target.port}", error=str(exc))
            return
        proto.send(data)

    async def _reap_idle(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(IDLE_TIMEOUT / 10)
            now = loop.time()
            for conn in list(self.connections.values()):
                if now - conn.last_activity > IDLE_TIMEOUT and conn.transport is not None:
                    conn.transport.close()

    async def close(self) -> None:
        """Close every socket and connection."""
        if self._reaper is not None:
            self._reaper.cancel()
        for proto in self._udp.values():
            if proto.transport is not None:
                proto.transport.close()
        for server in self._servers:
            server.close()
        for conn in list(self.connections.values()):
            if conn.transport is not None:
                conn.transport.close()
        for server in self._servers:
            await server.wait_closed()
