"""Network faults on a namespace's link, for tests/test_netem.py: what ``tc netem``
does, from parts this kernel has (it is built without sch_netem).

- loss: ``iptables -m statistic --mode random -j DROP`` on the way in (a drop
  on the way out would fail the sender's sendto with EPERM, which no real
  network does);
- duplication: ``-m statistic -j TEE`` (the kernel sends a clone to the peer);
- delay, jitter and reordering: ``-j NFQUEUE`` to `Delayer`, which holds each
  packet's verdict for its delay and then accepts it. Verdicts may be given
  in any order, so a packet held less than the one before it overtakes it, as
  with netem's jitter; ``reorder`` lets that share of packets through at once
  while the rest wait ``delay_ms`` (netem's ``reorder``).

All of it is in the namespace's own tables (iptables-legacy, mangle table, UDP
on the link), and `Delayer` speaks nfnetlink_queue itself (no C library).
Run inside the namespace: ``python -m tests.impair --queue 0 --delay 60
--jitter 50`` (stopped with SIGTERM; with ``--queue-bypass`` in the rule,
packets pass untouched when it is gone).
"""

from __future__ import annotations

import argparse
import heapq
import random
import select
import signal
import socket
import struct
import subprocess
import time
from dataclasses import dataclass

NETLINK_NETFILTER = 12
NFNL_SUBSYS_QUEUE = 3
NFQNL_MSG_PACKET, NFQNL_MSG_VERDICT, NFQNL_MSG_CONFIG = 0, 1, 2
NFQA_CFG_CMD, NFQA_CFG_PARAMS = 1, 2
NFQNL_CFG_CMD_BIND = 1
NFQNL_COPY_META = 1
NFQA_PACKET_HDR, NFQA_VERDICT_HDR = 1, 2
NF_ACCEPT = 1
NLM_F_REQUEST, NLM_F_ACK = 1, 4
NLMSG_ERROR = 2
SOL_NETLINK, NETLINK_NO_ENOBUFS = 270, 5


@dataclass(frozen=True)
class Faults:
    """What to do to the packets leaving one end of the link."""

    loss: float = 0.0  # share dropped
    duplicate: float = 0.0  # share sent twice
    delay_ms: float = 0.0
    jitter_ms: float = 0.0  # uniform +- around delay_ms
    reorder: float = 0.0  # share sent at once while the others wait delay_ms
    #: Ports (either end) whose packets are never delayed: SIP signalling, so a
    #: strict peer (sipp) does not fail on a provisional response that comes late.
    undelayed_ports: tuple[int, ...] = ()

    @property
    def delays(self) -> bool:
        return bool(self.delay_ms or self.jitter_ms)


def rules(dev: str, peer: str, faults: Faults, queue: int) -> list[list[str]]:
    """The iptables-legacy commands for `faults` on `dev`: loss of what comes in,
    duplication and delay of what goes out (applied at both ends, every
    direction gets all of them)."""
    base = ["iptables-legacy", "-t", "mangle", "-A", "OUTPUT", "-o", dev, "-p", "udp"]
    out = []
    if faults.loss:
        inbound = ["iptables-legacy", "-t", "mangle", "-A", "PREROUTING", "-i", dev, "-p", "udp"]
        out.append([*inbound, *_random(faults.loss), "-j", "DROP"])
    if faults.duplicate:
        out.append([*base, *_random(faults.duplicate), "-j", "TEE", "--gateway", peer])
    if faults.delays:
        skip = ["-m", "multiport", "!", "--ports", ",".join(map(str, faults.undelayed_ports))]
        out.append([*base, *(skip if faults.undelayed_ports else []),
                    "-j", "NFQUEUE", "--queue-num", str(queue), "--queue-bypass"])  # fmt: skip
    return out


def _random(share: float) -> list[str]:
    return ["-m", "statistic", "--mode", "random", "--probability", f"{share:.4f}"]


def _attr(kind: int, data: bytes) -> bytes:
    length = 4 + len(data)
    return struct.pack("=HH", length, kind) + data + b"\0" * (-length % 4)


class Delayer:
    """An nfnetlink_queue listener that accepts each packet after its delay."""

    def __init__(self, queue: int, faults: Faults, seed: int | None = None) -> None:
        self.queue = queue
        self.faults = faults
        self.random = random.Random(seed)
        self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        self.sock.setsockopt(SOL_NETLINK, NETLINK_NO_ENOBUFS, 1)
        self.sock.bind((0, 0))
        self.seq = 0
        self.held: list[tuple[float, int, int]] = []
        self.counter = 0
        self.handled = 0
        cmd = struct.pack("=BBH", NFQNL_CFG_CMD_BIND, 0, 0)
        self._send(NFQNL_MSG_CONFIG, _attr(NFQA_CFG_CMD, cmd), ack=True)
        params = struct.pack("!IB", 0, NFQNL_COPY_META)
        self._send(NFQNL_MSG_CONFIG, _attr(NFQA_CFG_PARAMS, params), ack=True)

    def _send(self, kind: int, attrs: bytes, *, ack: bool = False) -> None:
        self.seq += 1
        body = struct.pack("=BB", socket.AF_UNSPEC, 0) + struct.pack("!H", self.queue) + attrs
        flags = NLM_F_REQUEST | (NLM_F_ACK if ack else 0)
        head = struct.pack("=IHHII", 16 + len(body), (NFNL_SUBSYS_QUEUE << 8) | kind, flags,
                           self.seq, 0)  # fmt: skip
        self.sock.send(head + body)
        if ack:
            reply = self.sock.recv(65536)
            if struct.unpack_from("=H", reply, 4)[0] == NLMSG_ERROR:
                error = struct.unpack_from("=i", reply, 16)[0]
                if error:
                    raise OSError(-error, f"nfqueue config refused ({-error})")

    def _delay(self) -> float:
        faults = self.faults
        if faults.reorder and self.random.random() < faults.reorder:
            return 0.0
        jitter = self.random.uniform(-faults.jitter_ms, faults.jitter_ms)
        return max(0.0, faults.delay_ms + jitter) / 1000

    def _packets(self, data: bytes) -> list[int]:
        """The packet ids in one read of the socket."""
        ids, offset = [], 0
        while offset + 16 <= len(data):
            length, kind = struct.unpack_from("=IH", data, offset)
            if length < 16:
                break
            if kind == (NFNL_SUBSYS_QUEUE << 8) | NFQNL_MSG_PACKET:
                at = offset + 20  # nlmsghdr + nfgenmsg
                while at + 4 <= offset + length:
                    alen, atype = struct.unpack_from("=HH", data, at)
                    if alen < 4:
                        break
                    if atype & 0x7FFF == NFQA_PACKET_HDR:
                        ids.append(struct.unpack_from("!I", data, at + 4)[0])
                    at += (alen + 3) & ~3
            offset += (length + 3) & ~3
        return ids

    def _accept(self, packet: int) -> None:
        self._send(
            NFQNL_MSG_VERDICT, _attr(NFQA_VERDICT_HDR, struct.pack("!II", NF_ACCEPT, packet))
        )
        self.handled += 1

    def run(self, until: float) -> None:
        """Hold and release packets until `until` (time.monotonic())."""
        while (now := time.monotonic()) < until:
            while self.held and self.held[0][0] <= now:
                self._accept(heapq.heappop(self.held)[2])
            wait = min(until, self.held[0][0] if self.held else until) - now
            ready, _, _ = select.select([self.sock], [], [], max(0.0, wait))
            if not ready:
                continue
            arrived = time.monotonic()
            for packet in self._packets(self.sock.recv(65536)):
                self.counter += 1
                heapq.heappush(self.held, (arrived + self._delay(), self.counter, packet))

    def flush(self) -> None:
        """Let every packet still held go (on the way out)."""
        while self.held:
            self._accept(heapq.heappop(self.held)[2])


def apply(namespace: str, dev: str, peer: str, faults: Faults, queue: int = 0) -> None:
    """Set the rules for `faults` in `namespace` (clearing the old ones first)."""
    clear(namespace)
    for rule in rules(dev, peer, faults, queue):
        subprocess.run(["ip", "netns", "exec", namespace, *rule], check=True,
                       capture_output=True, timeout=20)  # fmt: skip


def clear(namespace: str) -> None:
    subprocess.run(["ip", "netns", "exec", namespace, "iptables-legacy", "-t", "mangle", "-F"],
                   capture_output=True, timeout=20, check=False)  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--queue", type=int, default=0)
    parser.add_argument("--delay", type=float, default=0.0, help="ms")
    parser.add_argument("--jitter", type=float, default=0.0, help="ms, uniform +-")
    parser.add_argument("--reorder", type=float, default=0.0, help="share sent at once")
    parser.add_argument("--seconds", type=float, default=600.0, help="longest run")
    args = parser.parse_args()
    stop = time.monotonic() + args.seconds
    delayer = Delayer(args.queue, Faults(delay_ms=args.delay, jitter_ms=args.jitter,
                                         reorder=args.reorder))  # fmt: skip

    def on_term(*_: object) -> None:
        nonlocal stop
        stop = 0.0

    signal.signal(signal.SIGTERM, on_term)
    print("delayer ready", flush=True)
    while time.monotonic() < stop:
        delayer.run(min(stop, time.monotonic() + 0.5))
    delayer.flush()
    print(f"delayer done: {delayer.handled} packets", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
