"""Live-test harness: the real server process and real SIP peers (sipp, baresip).

Everything here drives processes on 127.0.0.1 and is bounded in time: every
subprocess has a timeout, and every process we start is stopped by its PID
(never by name). The pytest fixtures in ``tests/conftest.py`` wrap these
helpers; ``scripts/demo.py`` imports this module directly, so it must not
depend on pytest at import time.

Peer binaries are required: a missing one fails the test, unless
``MEDIASERVER_ALLOW_SKIP=1`` is set, in which case the test is skipped with a
reason (see :func:`require_binary`).
"""

from __future__ import annotations

import copy
import csv
import hashlib
import json
import os
import random
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import uuid
import wave
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from mediaserver.media import wavfile

REPO_ROOT = Path(__file__).resolve().parent.parent
SIPP_SCENARIOS = REPO_ROOT / "tests" / "sipp"
ALLOW_SKIP_ENV = "MEDIASERVER_ALLOW_SKIP"
LOCALHOST = "127.0.0.1"

# Port plan (all on 127.0.0.1), chosen away from the kernel's ephemeral range
# (32768-60999) so a port we picked is not handed to someone's connect():
#   10000-19999  SIP listeners, sipp/baresip signalling, ctrl_tcp, sipp media
#   20000-29999  RTP ranges (server, baresip)
SIGNALLING_PORTS = (10000, 19999)
RTP_PORTS = (20000, 29999)

# Ports handed out by this process, so two helpers in one run never collide.
#: Per (range, block size): the blocks handed out recently, newest last. Only
#: enough to cover half the range are remembered: the servers of finished tests
#: are stopped and their ports free again, and a session starts more servers
#: than the RTP range holds blocks.
_handed_out: dict[tuple[int, int, int], deque[range]] = {}
_port_lock = threading.Lock()


# --------------------------------------------------------------------------- binaries


def which(name: str) -> str | None:
    """Path of a peer binary, also looking in /usr/sbin (kamailio lives there)."""
    found = shutil.which(name)
    if found:
        return found
    for folder in ("/usr/sbin", "/usr/bin", "/usr/local/sbin", "/usr/local/bin"):
        candidate = Path(folder) / name
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    return None


def skips_allowed() -> bool:
    """True when MEDIASERVER_ALLOW_SKIP=1: missing peers skip instead of failing."""
    return os.environ.get(ALLOW_SKIP_ENV, "") == "1"


def require_binary(name: str) -> str:
    """Return the path of a peer binary, or end the current test.

    A missing binary fails the test (CI must really run the peers). With
    ``MEDIASERVER_ALLOW_SKIP=1`` it is skipped with a reason instead. Only
    call this from inside a pytest test or fixture.
    """
    path = which(name)
    if path is not None:
        return path
    import pytest  # only needed inside a test run

    reason = f"{name} is not installed (run scripts/setup.sh)"
    if skips_allowed():
        pytest.skip(f"{reason}; skipped because {ALLOW_SKIP_ENV}=1")
    pytest.fail(f"{reason}; set {ALLOW_SKIP_ENV}=1 to skip instead", pytrace=False)
    raise AssertionError("unreachable")  # pytest.fail raises


# --------------------------------------------------------------------------- ports


def _can_bind(port: int, kind: int, host: str = LOCALHOST) -> bool:
    with socket.socket(socket.AF_INET, kind) as sock:
        if kind == socket.SOCK_STREAM:
            # A TIME_WAIT leftover does not stop a server that sets SO_REUSEADDR.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def free_port_block(
    count: int,
    *,
    lo: int = SIGNALLING_PORTS[0],
    hi: int = SIGNALLING_PORTS[1],
    align: int = 1,
    tcp: bool = False,
    attempts: int = 200,
) -> int:
    """Pick a random base so that ``base .. base+count-1`` are all bindable.

    Args:
        count: number of consecutive ports needed.
        lo: lowest acceptable port.
        hi: highest acceptable port (the whole block must fit below it).
        align: the base is a multiple of this (2 for RTP's even ports).
        tcp: also require each port to be free for TCP, not just UDP.
        attempts: random tries before giving up.

    Returns:
        The first port of the block. It is remembered so this process never
        hands it out twice; another process could still take it in the gap
        before the caller binds it, which the random choice makes unlikely.
    """
    rng = random.SystemRandom()
    first = (lo + align - 1) // align
    last = (hi - count + 1) // align
    if last < first:
        raise ValueError(f"no room for {count} ports in {lo}-{hi}")
    for _ in range(attempts):
        base = rng.randint(first, last) * align
        ports = range(base, base + count)
        with _port_lock:
            recent = _handed_out.setdefault(
                (lo, hi, count), deque(maxlen=max(8, (hi - lo + 1) // (2 * count)))
            )
            taken = (b for blocks in _handed_out.values() for b in blocks)
            if any(b[0] <= ports[-1] and ports[0] <= b[-1] for b in taken):
                continue
            if all(
                _can_bind(p, socket.SOCK_DGRAM) and (not tcp or _can_bind(p, socket.SOCK_STREAM))
                for p in ports
            ):
                recent.append(ports)
                return base
    raise RuntimeError(f"no free block of {count} ports in {lo}-{hi} after {attempts} tries")


def free_port() -> int:
    """A port free for both UDP and TCP on 127.0.0.1 (a SIP listener can use both)."""
    return free_port_block(1, tcp=True)


def free_udp_port() -> int:
    """A port free for UDP on 127.0.0.1."""
    return free_port_block(1)


def free_rtp_range(size: int = 100) -> tuple[int, int]:
    """An RTP port range ``(port_min, port_max)``: even base in 20000-29999, all UDP-free."""
    if size < 2:
        raise ValueError("an RTP range needs at least one RTP/RTCP pair")
    base = free_port_block(size, lo=RTP_PORTS[0], hi=RTP_PORTS[1], align=2)
    return base, base + size - 1


# --------------------------------------------------------------------------- config


DEFAULT_CONFIG: dict[str, Any] = {
    "sip": {
        "listen": [
            {"transport": "udp", "host": LOCALHOST, "port": 5060},
            {"transport": "tcp", "host": LOCALHOST, "port": 5060},
        ],
        "tls": {"cert": None, "key": None},
        "max_calls": 500,
        "retry_after": 5,
        "session_expires": 1800,
        "min_se": 90,
        "t1": 0.5,
        "t2": 4.0,
        "t4": 5.0,
        "user_agent": "mediaserver",
    },
    "media": {
        "address": LOCALHOST,
        "port_min": 40000,
        "port_max": 40999,
        "codecs": ["PCMU", "PCMA", "telephone-event"],
    },
    "routes": {"hold": {"app": "hold", "duration": 30, "ring": 0}},
    # The live tests of calls, turns and recovery ask phrases that pocketsphinx's
    # grammar hears reliably from espeak-ng; the default recogniser (Whisper) has
    # its own tests (tests/pipeline/stt/test_whisper.py, tests/test_conversation.py).
    "pipeline": {"stt": {"backend": "pocketsphinx"}},
    "shutdown": {"drain_timeout": 30},
    "logging": {"level": "info", "format": "console"},
}
"""The schema's defaults, mirroring conf/mediaserver.yaml."""


def deep_merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """Return a copy of ``base`` with ``override`` merged in.

    Mappings merge key by key, recursively; anything else (lists included)
    replaces the base value. Neither argument is modified.
    """
    merged = copy.deepcopy(dict(base))
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def server_config(**overrides: Any) -> dict[str, Any]:
    """The defaults the live tests run with, deep-merged with ``overrides``.

    UDP and TCP listen on one free port, RTP uses a random free block, logs go
    at debug level, and the drain on SIGTERM is short (5 s) so teardown is
    quick; timers (t1...) keep their defaults unless overridden.
    """
    port = free_port()
    rtp_min, rtp_max = free_rtp_range(100)
    base = deep_merge(
        DEFAULT_CONFIG,
        {
            "sip": {
                "listen": [
                    {"transport": "udp", "host": LOCALHOST, "port": port},
                    {"transport": "tcp", "host": LOCALHOST, "port": port},
                ]
            },
            "media": {"port_min": rtp_min, "port_max": rtp_max},
            # Any free port: servers of one test (or of parallel runs) must not collide.
            "admin": {"port": 0},
            "shutdown": {"drain_timeout": 5},
            "logging": {"level": "debug"},
        },
    )
    return deep_merge(base, overrides)


# --------------------------------------------------------------------------- raw SIP

_COMPACT = {
    "i": "call-id",
    "m": "contact",
    "e": "content-encoding",
    "l": "content-length",
    "c": "content-type",
    "f": "from",
    "s": "subject",
    "k": "supported",
    "t": "to",
    "v": "via",
    "x": "session-expires",
}


@dataclass
class SipMessage:
    """A loosely parsed SIP message (enough for assertions in tests)."""

    first_line: str
    headers: list[tuple[str, str]]
    body: bytes

    @property
    def status(self) -> int | None:
        """Status code of a response, None for a request."""
        parts = self.first_line.split(" ", 2)
        if len(parts) >= 2 and parts[0].startswith("SIP/") and parts[1].isdigit():
            return int(parts[1])
        return None

    @property
    def reason(self) -> str:
        """Reason phrase of a response ("" for a request)."""
        parts = self.first_line.split(" ", 2)
        return parts[2] if self.status is not None and len(parts) == 3 else ""

    @property
    def method(self) -> str | None:
        """Method of a request, None for a response."""
        return None if self.status is not None else self.first_line.split(" ", 1)[0]

    def header_all(self, name: str) -> list[str]:
        """All values of a header (compact forms match their long names)."""
        want = _COMPACT.get(name.lower(), name.lower())
        return [v for k, v in self.headers if _COMPACT.get(k.lower(), k.lower()) == want]

    def header(self, name: str) -> str | None:
        """First value of a header, or None."""
        values = self.header_all(name)
        return values[0] if values else None


def parse_sip(data: bytes) -> SipMessage:
    """Split a SIP message into start line, headers (unfolded) and body."""
    head, sep, body = data.partition(b"\r\n\r\n")
    if not sep:
        head, _, body = data.partition(b"\n\n")
    lines = head.decode("utf-8", "replace").replace("\r\n", "\n").split("\n")
    headers: list[tuple[str, str]] = []
    for line in lines[1:]:
        if line[:1] in (" ", "\t") and headers:
            name, value = headers[-1]
            headers[-1] = (name, f"{value} {line.strip()}")
        elif ":" in line:
            name, _, value = line.partition(":")
            headers.append((name.strip(), value.strip()))
    return SipMessage(first_line=lines[0].strip(), headers=headers, body=body)


def new_branch() -> str:
    """An RFC 3261 branch parameter (magic cookie + random)."""
    return "z9hG4bK" + uuid.uuid4().hex[:16]


def build_options(host: str, port: int, local_port: int, *, user: str | None = None) -> bytes:
    """A well-formed OPTIONS request from ``127.0.0.1:local_port`` (UDP)."""
    target = f"sip:{user}@{host}:{port}" if user else f"sip:{host}:{port}"
    tag = uuid.uuid4().hex[:10]
    call_id = f"{uuid.uuid4().hex}@{LOCALHOST}"
    lines = [
        f"OPTIONS {target} SIP/2.0",
        f"Via: SIP/2.0/UDP {LOCALHOST}:{local_port};branch={new_branch()};rport",
        "Max-Forwards: 70",
        f"From: <sip:harness@{LOCALHOST}:{local_port}>;tag={tag}",
        f"To: <{target}>",
        f"Call-ID: {call_id}",
        "CSeq: 1 OPTIONS",
        f"Contact: <sip:harness@{LOCALHOST}:{local_port}>",
        "Accept: application/sdp",
        "User-Agent: mediaserver-tests",
        "Content-Length: 0",
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def sip_request(
    host: str,
    port: int,
    data: bytes | Callable[[int], bytes],
    timeout: float = 1.0,
    *,
    local_port: int | None = None,
    stop_on_final: bool = False,
) -> list[bytes]:
    """Send one UDP datagram and collect every datagram that comes back.

    Args:
        host: server address.
        port: server UDP port.
        data: the raw bytes to send (sent as is, malformed or not), or a
            function of the local port returning them, for messages whose Via
            and Contact must name the port the answer should come back to.
        timeout: how long to keep listening, in seconds, from the send.
        local_port: bind this local port (default: any free port).
        stop_on_final: return as soon as a final (>= 200) response arrives.

    Returns:
        The datagrams received, in arrival order (retransmissions included).
    """
    replies: list[bytes] = []
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((LOCALHOST, local_port or 0))
        bound_port = sock.getsockname()[1]
        payload = data(bound_port) if callable(data) else data
        sock.sendto(payload, (host, port))
        deadline = time.monotonic() + timeout
        while (remaining := deadline - time.monotonic()) > 0:
            sock.settimeout(remaining)
            try:
                reply, _ = sock.recvfrom(65535)
            except TimeoutError:
                break
            except OSError:  # ICMP port unreachable reported on the socket
                break
            replies.append(reply)
            if stop_on_final:
                status = parse_sip(reply).status
                if status is not None and status >= 200:
                    break
    return replies


def sip_options(host: str, port: int, timeout: float = 1.0) -> SipMessage | None:
    """Send an OPTIONS over UDP; return the first final response, or None."""
    for reply in sip_request(
        host,
        port,
        lambda local: build_options(host, port, local),
        timeout,
        stop_on_final=True,
    ):
        message = parse_sip(reply)
        if message.status is not None and message.status >= 200:
            return message
    return None


# --------------------------------------------------------------------------- server


class ServerNotReady(RuntimeError):
    """The server exited or did not answer OPTIONS in time."""


class ServerProcess:
    """``python -m mediaserver run CONFIG`` as a subprocess, with its log in a file.

    Stop it by PID only: :meth:`terminate` (SIGTERM), :meth:`interrupt`
    (SIGINT), :meth:`kill` (SIGKILL) or :meth:`stop` (SIGTERM, then SIGKILL).
    """

    def __init__(
        self,
        config: Mapping[str, Any],
        workdir: Path,
        *,
        command: Sequence[str] | None = None,
        env: Mapping[str, str] | None = None,
    ) -> None:
        """Prepare (but do not start) a server.

        Args:
            config: the full config mapping, written to ``workdir/mediaserver.yaml``.
            workdir: folder for the config and the log (created if needed).
            command: argv before the config path; default
                ``[sys.executable, "-m", "mediaserver", "run"]``.
            env: extra environment variables for the server.
        """
        self.config: dict[str, Any] = copy.deepcopy(dict(config))
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.config_path = self.workdir / "mediaserver.yaml"
        self.log_path = self.workdir / "server.log"
        self.command = list(command or [sys.executable, "-m", "mediaserver", "run"])
        self.extra_env = dict(env or {})
        self._proc: subprocess.Popen[bytes] | None = None
        self._log_file: Any = None
        self._stop_requested = False
        self._exit_observed = False

        udp = [item for item in self.config["sip"]["listen"] if item.get("transport") == "udp"]
        first = udp[0] if udp else self.config["sip"]["listen"][0]
        self.host: str = str(first.get("host", LOCALHOST))
        self.port: int = int(first["port"])

    # -- lifecycle

    def start(self) -> ServerProcess:
        """Write the config and start the process (does not wait for readiness)."""
        if self._proc is not None:
            raise RuntimeError("server already started")
        self.config_path.write_text(yaml.safe_dump(self.config, sort_keys=False))
        env = os.environ.copy()
        env["PYTHONUNBUFFERED"] = "1"
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(REPO_ROOT), env.get("PYTHONPATH", "")) if p
        )
        env.update(self.extra_env)
        self._log_file = self.log_path.open("ab")
        self._proc = subprocess.Popen(
            [*self.command, str(self.config_path)],
            stdin=subprocess.DEVNULL,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            cwd=self.workdir,
            env=env,
        )
        return self

    def wait_ready(self, timeout: float = 15.0) -> SipMessage:
        """Poll with OPTIONS until the server gives any final response.

        Raises:
            ServerNotReady: the process exited, or ``timeout`` passed.
        """
        proc = self._require_proc()
        deadline = time.monotonic() + timeout
        while True:
            rc = proc.poll()
            if rc is not None:
                self._exit_observed = True
                raise ServerNotReady(
                    f"server exited with code {rc} before answering OPTIONS\n{self.log_tail()}"
                )
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise ServerNotReady(
                    f"server (pid {proc.pid}) did not answer OPTIONS on "
                    f"{self.host}:{self.port} within {timeout:.0f} s\n{self.log_tail()}"
                )
            reply = sip_options(self.host, self.port, timeout=min(0.5, remaining))
            if reply is not None:
                return reply

    @property
    def pid(self) -> int:
        """The server's process id."""
        return self._require_proc().pid

    @property
    def returncode(self) -> int | None:
        """Exit code, or None while running."""
        return self._require_proc().poll()

    def running(self) -> bool:
        """True while the process has not exited."""
        return self._proc is not None and self._proc.poll() is None

    def wait(self, timeout: float) -> int:
        """Wait for the process to exit on its own; return its exit code.

        Raises:
            subprocess.TimeoutExpired: it is still running after ``timeout``.
        """
        rc = self._require_proc().wait(timeout)
        self._exit_observed = True
        return rc

    def send_signal(self, sig: int) -> None:
        """Send a signal to the server's PID (no-op once it has exited)."""
        proc = self._require_proc()
        if proc.poll() is None:
            os.kill(proc.pid, sig)

    def interrupt(self) -> None:
        """Send SIGINT (as Ctrl-C would)."""
        self._stop_requested = True
        self.send_signal(signal.SIGINT)

    def terminate(self, timeout: float = 10.0) -> int:
        """Send SIGTERM and wait for the exit; return the exit code.

        Raises:
            subprocess.TimeoutExpired: still running after ``timeout`` (the
                fixture teardown will SIGKILL it).
        """
        self._stop_requested = True
        self.send_signal(signal.SIGTERM)
        return self.wait(timeout)

    def kill(self) -> int:
        """Send SIGKILL and reap the process; return the exit code."""
        self._stop_requested = True
        self.send_signal(signal.SIGKILL)
        return self.wait(10.0)

    def stop(self, grace: float = 10.0) -> int | None:
        """SIGTERM, then SIGKILL after ``grace`` seconds; close the log. Idempotent."""
        if self._proc is None:
            return None
        rc = self._proc.poll()
        if rc is None:
            self._stop_requested = True
            try:
                rc = self.terminate(grace)
            except subprocess.TimeoutExpired:
                print(f"server pid {self._proc.pid} ignored SIGTERM for {grace} s: SIGKILL")
                rc = self.kill()
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None
        return rc

    @property
    def exited_unexpectedly(self) -> bool:
        """True if the process died on its own and no one asked or waited for it."""
        if self._proc is None or self._stop_requested or self._exit_observed:
            return False
        return self._proc.poll() is not None

    # -- logs and addresses

    def log_text(self) -> str:
        """Everything the server wrote to stdout and stderr so far."""
        if self._log_file is not None:
            self._log_file.flush()
        try:
            return self.log_path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return ""

    def wait_log(self, text: str, timeout: float = 5.0, count: int = 1) -> str:
        """Wait until ``text`` appears ``count`` times in the log; return the log.

        A peer can finish a moment before the server writes the line about it
        (the machine is shared and noisy), so assertions on the log wait for it.
        """
        deadline = time.monotonic() + timeout
        log = self.log_text()
        while log.count(text) < count and time.monotonic() < deadline:
            time.sleep(0.05)
            log = self.log_text()
        return log

    def log_tail(self, lines: int = 60) -> str:
        """The last ``lines`` lines of the log, framed for an error message."""
        tail = "\n".join(self.log_text().splitlines()[-lines:])
        return f"--- server log tail ({self.log_path}) ---\n{tail}\n--- end of server log ---"

    def uri(self, user: str, transport: str | None = None) -> str:
        """A SIP URI for ``user`` on this server, e.g. ``sip:hold@127.0.0.1:5060``."""
        suffix = f";transport={transport}" if transport else ""
        return f"sip:{user}@{self.host}:{self.port}{suffix}"

    @property
    def target(self) -> str:
        """``host:port``, the remote-host argument for sipp."""
        return f"{self.host}:{self.port}"

    def _require_proc(self) -> subprocess.Popen[bytes]:
        if self._proc is None:
            raise RuntimeError("server not started")
        return self._proc

    def __repr__(self) -> str:
        pid = self._proc.pid if self._proc else None
        return f"<ServerProcess pid={pid} {self.host}:{self.port}>"


# --------------------------------------------------------------------------- sipp

_TRACE_ENTRY = re.compile(
    rb"^-{20,} (\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+)\n"
    rb"(\w+) message (sent|received) [\[(](\d+)\]? ?bytes\)? ?:\n\n",
    re.MULTILINE,
)


@dataclass
class SippTraceEntry:
    """One message from sipp's ``-trace_msg`` log."""

    time: float
    """When sipp sent or received it (Unix time, microsecond resolution)."""
    direction: str
    """``"sent"`` or ``"received"``."""
    transport: str
    """``"UDP"``, ``"TCP"``..."""
    raw: bytes

    @property
    def message(self) -> SipMessage:
        """The message, parsed."""
        return parse_sip(self.raw)


def parse_sipp_trace(data: bytes) -> list[SippTraceEntry]:
    """Parse a sipp ``-trace_msg`` log: every message sent and received, in order.

    This includes the retransmissions sipp absorbs without matching them to a
    scenario step, with their arrival times (used to check timer G).
    """
    entries: list[SippTraceEntry] = []
    for match in _TRACE_ENTRY.finditer(data):
        stamp = datetime.strptime(match.group(1).decode(), "%Y-%m-%d %H:%M:%S.%f")
        size = int(match.group(4))
        entries.append(
            SippTraceEntry(
                time=stamp.timestamp(),
                direction=match.group(3).decode(),
                transport=match.group(2).decode(),
                raw=data[match.end() : match.end() + size],
            )
        )
    return entries


@dataclass(frozen=True)
class SippCall:
    """One call a sipp UAS took, from its trace: the Request-URI user, when the
    INVITE came and when the call ended (BYE, or the final error response)."""

    call_id: str
    user: str
    start: float
    end: float | None


def sipp_uas_calls(entries: list[SippTraceEntry]) -> list[SippCall]:
    """The calls in a sipp UAS's trace (one per INVITE Call-ID, retransmissions
    folded), in arrival order."""
    starts: dict[str, tuple[str, float]] = {}
    ends: dict[str, float] = {}
    for entry in entries:
        head = entry.raw.split(b"\r\n\r\n", 1)[0].decode("latin-1").split("\r\n")
        first = head[0]
        call_id = next(
            (
                h.split(":", 1)[1].strip()
                for h in head[1:]
                if h.lower().startswith(("call-id:", "i:"))
            ),
            "",
        )
        if entry.direction == "received" and first.startswith("INVITE ") and call_id not in starts:
            uri = first.split(" ")[1]
            user = uri.split(":", 1)[1].split("@", 1)[0] if "@" in uri else ""
            starts[call_id] = (user, entry.time)
        elif first.startswith("BYE ") or (
            first.startswith("SIP/2.0 ") and int(first.split(" ")[1]) >= 300
        ):
            ends.setdefault(call_id, entry.time)
    return [SippCall(cid, user, t, ends.get(cid)) for cid, (user, t) in starts.items()]


def max_overlap(calls: list[SippCall], until: float) -> int:
    """The most calls up at once (a call not ended counts until `until`)."""
    marks = sorted(
        [(c.start, 1) for c in calls] + [(c.end if c.end is not None else until, -1) for c in calls]
    )
    up = best = 0
    for _, step in marks:  # at equal times an end (-1) sorts before a start (+1)
        up += step
        best = max(best, up)
    return best


@dataclass
class SippResult:
    """What a sipp run did.

    sipp's exit codes: 0 all calls succeeded, 1 at least one call failed,
    97 exit on internal command, 99 normal exit without calls processed,
    255 (-1) fatal error, 254 (-2) fatal error binding a socket. ``rc`` is
    -9 with ``timed_out`` set when the subprocess timeout had to kill it.
    """

    cmd: list[str]
    rc: int
    stdout: str
    stderr: str
    stats: dict[str, str] | None = None
    timed_out: bool = False
    workdir: Path = field(default_factory=Path)
    errors_path: Path | None = None
    messages_path: Path | None = None
    screen_path: Path | None = None

    @property
    def ok(self) -> bool:
        """True when sipp exited 0 (every call succeeded)."""
        return self.rc == 0 and not self.timed_out

    def stat(self, name: str) -> int:
        """An integer column of the final ``-stf`` row, e.g. ``stat("FailedCall(C)")``."""
        if self.stats is None:
            raise ValueError("no statistics: run sipp with stats=True")
        return int(self.stats[name])

    def errors(self) -> str:
        """sipp's error log (unexpected messages, timeouts), "" if none."""
        return _read(self.errors_path)

    def messages(self) -> str:
        """Every SIP message sipp sent and received."""
        return _read(self.messages_path)

    def trace(self) -> list[SippTraceEntry]:
        """Every message sipp sent and received, parsed from the ``-trace_msg`` log."""
        if self.messages_path is None or not self.messages_path.exists():
            return []
        return parse_sipp_trace(self.messages_path.read_bytes())

    def received(
        self, *, status: int | None = None, method: str | None = None
    ) -> list[SippTraceEntry]:
        """Messages sipp received, retransmissions included, filtered.

        Args:
            status: keep responses with this status code.
            method: keep requests with this method, or responses whose CSeq
                names it (``received(status=200, method="INVITE")``).
        """
        found = []
        for entry in self.trace():
            if entry.direction != "received":
                continue
            message = entry.message
            if status is not None and message.status != status:
                continue
            if method is not None:
                cseq = (message.header("CSeq") or "").split()
                named = message.method if message.status is None else (cseq[-1] if cseq else "")
                if named != method:
                    continue
            found.append(entry)
        return found

    def screen(self) -> str:
        """sipp's final statistics screen."""
        return _read(self.screen_path)

    def describe(self, tail: int = 40) -> str:
        """A report for assertion messages: command, exit, errors, messages."""

        def last(text: str) -> str:
            return "\n".join(text.splitlines()[-tail:])

        return (
            f"sipp rc={self.rc}{' (timed out)' if self.timed_out else ''}\n"
            f"cmd: {' '.join(self.cmd)}\n"
            f"--- stderr ---\n{last(self.stderr)}\n"
            f"--- errors ---\n{last(self.errors())}\n"
            f"--- screen ---\n{last(self.screen())}\n"
            f"--- messages (tail) ---\n{last(self.messages())}"
        )


def _read(path: Path | None) -> str:
    if path is None:
        return ""
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return ""


def _has_option(args: Sequence[str], *names: str) -> bool:
    return any(arg in names for arg in args)


def _last_csv_row(path: Path) -> dict[str, str] | None:
    try:
        with path.open(newline="", encoding="utf-8", errors="replace") as fh:
            rows = [row for row in csv.reader(fh, delimiter=";") if row]
    except FileNotFoundError:
        return None
    if len(rows) < 2:
        return None
    header, last = rows[0], rows[-1]
    return {name: value for name, value in zip(header, last) if name}


def run_sipp(
    args: Sequence[str],
    timeout: float,
    cwd: Path,
    *,
    stats: bool = False,
    name: str = "sipp",
    sipp: str | None = None,
) -> SippResult:
    """Run sipp to completion, bounded three ways, and collect its results.

    ``args`` carry the scenario and target, e.g.
    ``["-sf", str(SIPP_SCENARIOS / "options.xml"), "-s", "hold", server.target]``.
    Added unless already present: ``-m 1``, ``-timeout <timeout>s
    -timeout_error``, ``-nostdin``, ``-i 127.0.0.1``, a free ``-p``, a free
    even ``-mp`` (sipp also uses mp+2), ``-mi 127.0.0.1``, and error, message
    and screen traces in ``cwd``. The subprocess is killed (by its PID) if it
    outlives ``timeout`` + 15 s.

    Args:
        args: sipp arguments.
        timeout: sipp's global timeout in seconds (hitting it is a failure).
        cwd: working folder; traces and statistics are written here.
        stats: also write ``-trace_stat -stf`` and parse its final row.
        name: file name prefix for this run's traces in ``cwd``.
        sipp: path of the binary (default: found on PATH).
    """
    binary = sipp or which("sipp")
    if binary is None:
        raise FileNotFoundError("sipp is not installed (Debian package sip-tester)")
    cwd = Path(cwd)
    cwd.mkdir(parents=True, exist_ok=True)
    cmd = [binary, *args]
    if not _has_option(args, "-m"):
        cmd += ["-m", "1"]
    if not _has_option(args, "-timeout"):
        cmd += ["-timeout", f"{max(1, round(timeout))}s"]
    if not _has_option(args, "-timeout_error"):
        cmd += ["-timeout_error"]
    if not _has_option(args, "-nostdin"):
        cmd += ["-nostdin"]
    if not _has_option(args, "-i"):
        cmd += ["-i", LOCALHOST]
    if not _has_option(args, "-p"):
        cmd += ["-p", str(free_port_block(1, tcp=True))]
    if not _has_option(args, "-mp"):
        cmd += ["-mp", str(free_port_block(4, align=2))]
    if not _has_option(args, "-mi"):
        cmd += ["-mi", LOCALHOST]
    errors_path = cwd / f"{name}_errors.log"
    messages_path = cwd / f"{name}_messages.log"
    screen_path = cwd / f"{name}_screen.log"
    cmd += ["-trace_err", "-error_file", str(errors_path)]
    cmd += ["-trace_msg", "-message_file", str(messages_path)]
    cmd += ["-trace_screen", "-screen_file", str(screen_path)]
    stats_path = cwd / f"{name}_stats.csv"
    if stats:
        cmd += ["-trace_stat", "-stf", str(stats_path)]
    try:
        done = subprocess.run(
            cmd,
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=timeout + 15,
            check=False,
        )
        rc, out, err, timed_out = done.returncode, done.stdout, done.stderr, False
    except subprocess.TimeoutExpired as exc:  # run() has already killed it by PID
        rc, timed_out = -9, True
        out = exc.stdout if isinstance(exc.stdout, bytes) else b""
        err = exc.stderr if isinstance(exc.stderr, bytes) else b""
    return SippResult(
        cmd=cmd,
        rc=rc,
        stdout=out.decode("utf-8", "replace"),
        stderr=err.decode("utf-8", "replace"),
        stats=_last_csv_row(stats_path) if stats else None,
        timed_out=timed_out,
        workdir=cwd,
        errors_path=errors_path,
        messages_path=messages_path,
        screen_path=screen_path,
    )


# --------------------------------------------------------------------------- speech


DEFAULT_SPEECH = (
    "Hello, this is a test call from the baresip softphone. "
    "One two three four five. The quick brown fox jumps over the lazy dog."
)


def speech_wav(
    text: str,
    folder: Path,
    *,
    pad_seconds: float = 0.0,
    voice: str = "en-us",
) -> Path:
    """Synthesize ``text`` to an 8 kHz mono 16-bit WAV (espeak-ng + sox).

    ``pad_seconds`` of silence are appended (to make a caller stay on the line
    longer than its words). Results are cached in ``folder`` by content.
    """
    espeak = which("espeak-ng")
    sox = which("sox")
    if espeak is None or sox is None:
        raise FileNotFoundError("espeak-ng and sox are needed to make speech WAVs")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    key = hashlib.sha1(f"{voice}|{pad_seconds}|{text}".encode()).hexdigest()[:12]
    out = folder / f"speech_{key}_8k.wav"
    if out.exists():
        return out
    raw = folder / f"speech_{key}_raw.wav"
    subprocess.run([espeak, "-v", voice, "-w", str(raw), text], check=True, timeout=60)
    effects = ["pad", "0", f"{pad_seconds:g}"] if pad_seconds > 0 else []
    tmp = folder / f"speech_{key}_tmp.wav"
    subprocess.run(
        [
            sox,
            str(raw),
            "-r",
            "8000",
            "-c",
            "1",
            "-b",
            "16",
            "-e",
            "signed-integer",
            str(tmp),
            *effects,
        ],
        check=True,
        timeout=60,
    )
    tmp.replace(out)
    raw.unlink(missing_ok=True)
    return out


def wav_duration(path: Path) -> float:
    """Length of a WAV file in seconds."""
    import wave

    with wave.open(str(path), "rb") as wav:
        return wav.getnframes() / float(wav.getframerate())


# --------------------------------------------------------------------------- baresip


@dataclass
class BaresipResult:
    """What a baresip caller saw.

    ``messages`` are the ctrl_tcp objects in arrival order (events and
    command responses), each with a ``wall`` key (time.monotonic() on
    arrival) added, e.g.
    ``{"event": true, "type": "CALL_ESTABLISHED", "param": "...", "wall": 12.3}``.
    ``dtmf_sent`` lists each DTMF digit the harness asked baresip to send
    (``sndcode`` over ctrl_tcp) with its time on the same clock as ``wall``.
    """

    cmd: list[str]
    rc: int | None
    output: str
    messages: list[dict[str, Any]]
    config_dir: Path
    source_wav: Path
    recordings: list[Path]
    timed_out: bool = False
    dtmf_sent: list[tuple[str, float]] = field(default_factory=list)

    @property
    def events(self) -> list[dict[str, Any]]:
        """The ctrl_tcp events (``"event": true``), in order."""
        return [m for m in self.messages if m.get("event")]

    @property
    def replies(self) -> list[dict[str, Any]]:
        """The ctrl_tcp command responses (``"response": true``), in order."""
        return [m for m in self.messages if m.get("response")]

    def event_types(self) -> list[str]:
        """The ``type`` of every event, in order."""
        return [str(e.get("type", "")) for e in self.events]

    def first_event(self, kind: str) -> dict[str, Any] | None:
        """The first event of a type (e.g. "CALL_ESTABLISHED"), or None."""
        return next((e for e in self.events if e.get("type") == kind), None)

    @property
    def established(self) -> bool:
        """True if the call was answered (event, or console line when events were missed)."""
        return self.first_event("CALL_ESTABLISHED") is not None or (
            "Call established:" in self.output
        )

    @property
    def closed_reason(self) -> str | None:
        """The CALL_CLOSED reason text, e.g. "Connection reset by peer" after a BYE."""
        event = self.first_event("CALL_CLOSED")
        return None if event is None else str(event.get("param", ""))

    @property
    def remote_hangup(self) -> bool:
        """True if the far end ended the call (baresip got a BYE)."""
        return "reset by peer" in (self.closed_reason or "").lower()

    @property
    def call_seconds(self) -> float | None:
        """Seconds from CALL_ESTABLISHED to CALL_CLOSED, as seen by baresip."""
        start = self.first_event("CALL_ESTABLISHED")
        end = self.first_event("CALL_CLOSED")
        if start is None or end is None:
            return None
        return float(end["wall"]) - float(start["wall"])

    @property
    def heard_wav(self) -> Path | None:
        """The recording of what baresip received and decoded (``*-dec.wav``)."""
        return next((p for p in self.recordings if p.name.endswith("-dec.wav")), None)

    @property
    def sent_wav(self) -> Path | None:
        """The recording of what baresip encoded and sent (``*-enc.wav``)."""
        return next((p for p in self.recordings if p.name.endswith("-enc.wav")), None)

    @property
    def dtmf_digits(self) -> str:
        """The DTMF digits sent, in order (e.g. "159#")."""
        return "".join(digit for digit, _ in self.dtmf_sent)

    def dtmf_offsets(self) -> list[tuple[str, float]]:
        """Each digit sent with its time in seconds after CALL_ESTABLISHED."""
        start = self.first_event("CALL_ESTABLISHED")
        if start is None:
            return []
        return [(digit, at - float(start["wall"])) for digit, at in self.dtmf_sent]

    def describe(self, tail: int = 40) -> str:
        """A report for assertion messages."""
        out = "\n".join(self.output.splitlines()[-tail:])
        dtmf = f"dtmf sent: {self.dtmf_offsets()}\n" if self.dtmf_sent else ""
        return (
            f"baresip rc={self.rc}{' (timed out)' if self.timed_out else ''}\n"
            f"cmd: {' '.join(self.cmd)}\nevents: {self.event_types()}\n{dtmf}"
            f"--- output (tail) ---\n{out}"
        )


# Digits baresip can send as RFC 4733 telephone-events (events 0-15).
DTMF_DIGITS = "0123456789*#ABCD"


def _netstring(obj: Mapping[str, Any]) -> bytes:
    data = json.dumps(obj).encode()
    return str(len(data)).encode() + b":" + data + b","


def _netstrings(buffer: bytearray) -> Iterator[bytes]:
    """Pop complete netstrings off the front of ``buffer``."""
    while True:
        colon = buffer.find(b":")
        if colon <= 0:
            return
        try:
            size = int(buffer[:colon])
        except ValueError:  # garbage: drop it
            del buffer[:]
            return
        end = colon + 1 + size
        if len(buffer) < end + 1:
            return
        payload = bytes(buffer[colon + 1 : end])
        del buffer[: end + 1]
        yield payload


def write_baresip_config(
    folder: Path,
    *,
    sip_port: int,
    ctrl_port: int,
    rtp_range: tuple[int, int],
    source_wav: Path,
    recordings: Path,
    user: str = "alice",
    codec: str = "pcmu",
    answermode: str | None = None,
    account: str | None = None,
    extra_config: str = "",
    host: str = LOCALHOST,
) -> None:
    """Write baresip's ``config`` and ``accounts`` (the PEERS.md caller recipe).

    SIP and RTP use ``host`` (the address of a network namespace's link, say);
    the ctrl_tcp socket stays on 127.0.0.1.

    ``extra_config`` lines are appended to ``config`` (e.g. ``module srtp.so``
    and ``sip_cafile CERT`` for SDES-SRTP over TLS).

    ``account`` replaces the default account (``<sip:USER@LOCALHOST:SIP_PORT>``,
    which never registers) with an address-of-record and its parameters, e.g.
    ``<sip:alice@127.0.0.1:5060>;auth_pass=secret;regint=60`` to register with
    (and authenticate to) the server at 127.0.0.1:5060.
    """
    folder.mkdir(parents=True, exist_ok=True)
    recordings.mkdir(parents=True, exist_ok=True)
    config = f"""\
poll_method epoll
sip_listen {host}:{sip_port}
net_interface {host}
rtp_ports {rtp_range[0]}-{rtp_range[1]}
audio_source aufile,{source_wav}
audio_player aubridge,nullA
audio_alert aubridge,nullA
module_path /usr/lib/baresip/modules
module g711.so
module g722.so
module opus.so
module aufile.so
module aubridge.so
module sndfile.so
snd_path {recordings}
module_tmp uuid.so
module_tmp account.so
module_app menu.so
module_app ctrl_tcp.so
ctrl_tcp_listen {LOCALHOST}:{ctrl_port}
"""
    (folder / "config").write_text(config + extra_config)
    params = f";audio_codecs={codec}"
    if answermode:
        params += f";answermode={answermode}"
    line = account or f"<sip:{user}@{host}:{sip_port}>;regint=0"
    (folder / "accounts").write_text(f"{line}{params}\n")
    (folder / "contacts").write_text("")


def run_baresip(
    uri: str | None,
    workdir: Path,
    *,
    seconds: float = 20.0,
    text: str = DEFAULT_SPEECH,
    pad_seconds: float = 0.0,
    source_wav: Path | None = None,
    codec: str = "pcmu",
    quit_on_close: bool = True,
    dial_on_cmdline: bool = False,
    baresip: str | None = None,
    dtmf: str | None = None,
    dtmf_delay: float = 1.0,
    dtmf_gap: float = 0.3,
    account: str | None = None,
    answermode: str | None = None,
    extra_config: str = "",
    host: str = LOCALHOST,
) -> BaresipResult:
    """Place one call with a headless baresip caller and wait for it to end.

    baresip runs as ``baresip -f DIR -t SECONDS`` with stdin a pipe, plays
    ``source_wav`` (default: ``text`` spoken by espeak-ng, 8 kHz, plus
    ``pad_seconds`` of silence) and records with sndfile. The harness connects
    to its ctrl_tcp socket first and then dials over it, so no call event
    (CALL_RINGING, CALL_ESTABLISHED, CALL_CLOSED...) is missed; with
    ``dial_on_cmdline`` it dials with ``-e "/dial URI"`` instead, as in
    PEERS.md, and events that happen before the socket connects are lost (the
    console output still has them). Once the call closes, baresip is told to
    quit. The caller hangs up by itself when its WAV ends, so make the WAV
    longer than the call when the server should be the one to hang up.

    With ``dtmf``, each digit is sent during the call as an RFC 4733
    telephone-event: ``dtmf_delay`` seconds after CALL_ESTABLISHED the harness
    sends ``{"command": "sndcode", "params": DIGIT}`` over ctrl_tcp, one digit
    every ``dtmf_gap`` seconds (baresip then sends ~180 ms of event packets
    and three end packets per digit). baresip always offers
    ``telephone-event/8000`` (payload type 101), but it sends events only if
    the far end's SDP answer includes telephone-event too; otherwise it drops
    the digits silently. ``BaresipResult.dtmf_sent`` records each digit and
    when it was sent. Digits wait for the CALL_ESTABLISHED event, which
    ``dial_on_cmdline`` can miss (then none are sent).

    Args:
        uri: what to dial, e.g. ``sip:hold@127.0.0.1:5060``.
        workdir: folder for config, WAVs, recordings and output.
        seconds: baresip's ``-t``: it quits after this long regardless.
        text: words to speak when ``source_wav`` is not given.
        pad_seconds: silence appended to the generated speech.
        source_wav: an 8 kHz mono s16 WAV to play instead.
        codec: ``audio_codecs`` for the account (pcmu, pcma, g722 or opus).
        quit_on_close: send ``quit`` over ctrl_tcp when the call closes.
        dial_on_cmdline: dial with ``-e "/dial URI"`` rather than over ctrl_tcp.
        baresip: path of the binary (default: found on PATH).
        dtmf: DTMF digits to send during the call, from ``0-9 * # A-D``.
        dtmf_delay: seconds after CALL_ESTABLISHED before the first digit.
        dtmf_gap: seconds between the starts of consecutive digits.
        account: the account line (see `write_baresip_config`), e.g. to
            register with the server and answer its digest challenges.
        answermode: the account's answermode; with ``uri`` None baresip dials
            nothing and, with ``"auto"``, answers the call that comes (a callee).
        extra_config: lines appended to baresip's ``config``.
        host: the address baresip's SIP and RTP use.
    """
    if dtmf:
        dtmf = dtmf.upper()
        bad = sorted(set(dtmf) - set(DTMF_DIGITS))
        if bad:
            raise ValueError(f"not DTMF digits: {bad!r} (allowed: {DTMF_DIGITS})")
    binary = baresip or which("baresip")
    if binary is None:
        raise FileNotFoundError("baresip is not installed")
    workdir = Path(workdir)
    config_dir = workdir / "baresip"
    recordings_dir = workdir / "recordings"
    wav = source_wav or speech_wav(text, workdir, pad_seconds=pad_seconds)
    sip_port = free_port()
    ctrl_port = free_port()
    write_baresip_config(
        config_dir,
        sip_port=sip_port,
        ctrl_port=ctrl_port,
        rtp_range=free_rtp_range(20),
        source_wav=wav,
        recordings=recordings_dir,
        codec=codec,
        account=account,
        answermode=answermode,
        extra_config=extra_config,
        host=host,
    )
    before = set(recordings_dir.glob("*.wav"))
    cmd = [binary, "-f", str(config_dir), "-t", str(max(1, round(seconds)))]
    if dial_on_cmdline and uri is not None:
        cmd += ["-e", f"/dial {uri}"]
    output_path = workdir / "baresip.log"
    messages: list[dict[str, Any]] = []
    dtmf_sent: list[tuple[str, float]] = []
    timed_out = False
    with output_path.open("wb") as out:
        proc = subprocess.Popen(
            cmd, stdin=subprocess.PIPE, stdout=out, stderr=subprocess.STDOUT, cwd=workdir
        )
        try:
            reader = threading.Thread(
                target=_collect_ctrl_events,
                args=(proc, ctrl_port, messages, quit_on_close, seconds + 5),
                kwargs={
                    "dial": None if dial_on_cmdline else uri,  # None: a callee
                    "dtmf": dtmf or None,
                    "dtmf_delay": dtmf_delay,
                    "dtmf_gap": dtmf_gap,
                    "dtmf_sent": dtmf_sent,
                },
                daemon=True,
            )
            reader.start()
            try:
                rc: int | None = proc.wait(timeout=seconds + 10)
            except subprocess.TimeoutExpired:
                timed_out = True
                proc.kill()
                rc = proc.wait(timeout=10)
            reader.join(timeout=5)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=10)
            if proc.stdin is not None:
                proc.stdin.close()
    recordings = sorted(set(recordings_dir.glob("*.wav")) - before)
    return BaresipResult(
        cmd=cmd,
        rc=rc,
        output=output_path.read_text(encoding="utf-8", errors="replace"),
        messages=messages,
        config_dir=config_dir,
        source_wav=wav,
        recordings=recordings,
        timed_out=timed_out,
        dtmf_sent=dtmf_sent,
    )


def _collect_ctrl_events(
    proc: subprocess.Popen[bytes],
    port: int,
    events: list[dict[str, Any]],
    quit_on_close: bool,
    timeout: float,
    *,
    dial: str | None = None,
    dtmf: str | None = None,
    dtmf_delay: float = 1.0,
    dtmf_gap: float = 0.3,
    dtmf_sent: list[tuple[str, float]] | None = None,
) -> None:
    """Read ctrl_tcp events until baresip exits; ask it to quit when the call closes.

    With ``dial``, send the dial command once connected (so no event is missed).
    With ``dtmf``, send one ``sndcode`` command per digit, the first
    ``dtmf_delay`` seconds after CALL_ESTABLISHED and then every ``dtmf_gap``
    seconds, until the call closes; each digit sent is appended to
    ``dtmf_sent`` with its time.monotonic().
    """
    deadline = time.monotonic() + timeout
    sock: socket.socket | None = None
    while sock is None and proc.poll() is None and time.monotonic() < deadline:
        try:
            sock = socket.create_connection((LOCALHOST, port), timeout=1.0)
        except OSError:
            time.sleep(0.05)
    if sock is None:
        return
    buffer = bytearray()
    with sock:
        if dial is not None:
            sock.sendall(_netstring({"command": "dial", "params": dial, "token": "dial"}))
        pending = list(dtmf or "")
        next_digit_at: float | None = None  # set once the call is established
        while proc.poll() is None and time.monotonic() < deadline:
            if pending and next_digit_at is not None and time.monotonic() >= next_digit_at:
                digit = pending.pop(0)
                token = f"dtmf{len(dtmf or '') - len(pending)}"
                try:
                    sock.sendall(
                        _netstring({"command": "sndcode", "params": digit, "token": token})
                    )
                except OSError:
                    return
                if dtmf_sent is not None:
                    dtmf_sent.append((digit, time.monotonic()))
                next_digit_at += dtmf_gap
            wait = 0.2
            if pending and next_digit_at is not None:
                wait = min(wait, max(0.005, next_digit_at - time.monotonic()))
            sock.settimeout(wait)
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                return
            if not chunk:
                return
            buffer.extend(chunk)
            for payload in _netstrings(buffer):
                try:
                    message = json.loads(payload)
                except ValueError:
                    continue
                if not isinstance(message, dict):
                    continue
                message["wall"] = time.monotonic()
                events.append(message)
                kind = message.get("type")
                if kind == "CALL_ESTABLISHED" and pending and next_digit_at is None:
                    next_digit_at = float(message["wall"]) + dtmf_delay
                elif kind == "CALL_CLOSED":
                    pending = []  # no call to send digits in any more
                if quit_on_close and message.get("type") == "CALL_CLOSED":
                    # Give sndfile a moment to finish its WAV headers, then quit.
                    time.sleep(0.3)
                    try:
                        sock.sendall(_netstring({"command": "quit", "token": "quit"}))
                    except OSError:
                        return


# --------------------------------------------------------------------------- audio checks


def best_alignment(reference: np.ndarray, heard: np.ndarray) -> tuple[int, float]:
    """Lag of `reference` inside `heard` and the normalised correlation there."""
    ref = reference.astype(np.float64)
    sig = heard.astype(np.float64)
    n = len(sig) + len(ref)
    size = 1 << (n - 1).bit_length()
    corr = np.fft.irfft(np.fft.rfft(sig, size) * np.conj(np.fft.rfft(ref, size)), size)
    lag = int(np.argmax(corr[: len(sig)]))
    seg = sig[lag : lag + len(ref)]
    r = ref[: len(seg)]
    denom = np.sqrt(np.dot(seg, seg) * np.dot(r, r))
    return lag, float(np.dot(seg, r) / denom) if denom else 0.0


def write_wav(path: Path, pcm: np.ndarray, rate: int = 8000) -> Path:
    """A mono 16-bit WAV (e.g. for baresip to play), its folder made; returns `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    wavfile.write_wav(path, pcm, rate)
    return path


#: The weather agent the live agent tests call: its greeting, the question a
#: caller asks (a phrase pocketsphinx hears reliably from espeak-ng over G.711)
#: and the answer its tool gives.
WEATHER_GREETING = "Hello, this is the weather line."
WEATHER_QUESTION = "what is the weather in paris"
WEATHER_ANSWER = "It is sunny in paris today."


def weather_route() -> dict[str, Any]:
    """A fresh `agent` route config of the weather agent (callers may change it)."""
    return {
        "app": "agent",
        "duration": 0,
        "agent": {
            "greeting": WEATHER_GREETING,
            "hints": ["what is the weather in", "thank you"],
            "tools": [
                {
                    "name": "get_weather",
                    "description": "Tell the weather forecast for a city.",
                    "parameters": {
                        "type": "object",
                        "properties": {
                            "city": {"type": "string", "enum": ["paris", "london", "berlin"]}
                        },
                        "required": ["city"],
                    },
                    "response": "It is sunny in {city} today.",
                }
            ],
        },
    }


def caller_wav(text: str, folder: Path, *, lead: float = 5.0, tail: float = 5.0) -> Path:
    """What a caller plays into an agent: `lead` s of silence (the greeting), `text`
    spoken by espeak-ng at 8 kHz, then `tail` s of silence (the answer)."""
    question, _ = read_wav_mono(speech_wav(text, folder / "speech"))
    lead_pcm = np.zeros(round(8000 * lead), dtype=np.int16)
    tail_pcm = np.zeros(round(8000 * tail), dtype=np.int16)
    return write_wav(folder / "caller.wav", np.concatenate([lead_pcm, question, tail_pcm]))


_ESPEAK_REFERENCE = """
import sys
import numpy as np
from mediaserver.codecs.resample import resample
from mediaserver.pipeline.tts.clauses import ClauseAggregator
from mediaserver.pipeline.tts.espeak import EspeakBackend
tts = EspeakBackend()
out = {}
for i, text in enumerate(sys.argv[3:]):
    # Clause by clause, as the agent speaks a reply.
    clauses = ClauseAggregator()
    parts = clauses.push(text) + [clauses.flush() or ""]
    pcm = np.concatenate(
        [c.pcm for part in parts if part.strip() for c in tts.synthesize(part, sys.argv[2])]
    )
    out[f"a{i}"] = resample(pcm, tts.sample_rate, 8000)
np.savez(sys.argv[1], **out)
"""


def agent_speech(folder: Path, *texts: str, voice: str = "en-us") -> list[np.ndarray]:
    """What an agent with espeak-ng `voice` sounds like saying `texts`, at 8 kHz.

    Made in order in a fresh process: libespeak-ng keeps state from one
    synthesis to the next (the same text comes out a few samples longer or
    shorter), so the reference is made the way the server made it.
    """
    path = folder / "reference.npz"
    subprocess.run(
        [sys.executable, "-c", _ESPEAK_REFERENCE, str(path), voice, *texts],
        check=True,
        timeout=60,
        cwd=REPO_ROOT,
    )
    with np.load(path) as data:
        return [data[f"a{i}"] for i in range(len(texts))]


def rtp_stream_wav(folder: Path) -> Path:
    """``folder/soak_ulaw.wav``: 3 s of a sweeping tone in u-law, the file sipp's
    ``rtp_stream`` plays in ``tests/sipp/uac_rr_rtp.xml`` (read from sipp's folder)."""
    path = Path(folder) / "soak_ulaw.wav"
    subprocess.run(
        ["sox", "-n", "-r", "8000", "-c", "1", "-e", "u-law", "-b", "8", str(path),
         "synth", "3", "sine", "300-900", "vol", "0.3"],
        check=True, timeout=30, capture_output=True,
    )  # fmt: skip
    return path


def write_rtp_pcap(path: Path, pcm: np.ndarray, *, ssrc: int = 0x5EED) -> Path:
    """8 kHz PCM as a pcap of PCMU RTP packets, 20 ms apart, for sipp's
    ``play_pcap_audio`` (classic pcap, Ethernet + IPv4 + UDP; sipp rewrites the
    addresses and ports). Returns `path`."""
    from mediaserver.codecs.g711 import ulaw_encode

    samples = np.asarray(pcm, dtype=np.int16)
    samples = np.concatenate([samples, np.zeros(-len(samples) % 160, dtype=np.int16)])
    codes = ulaw_encode(samples.reshape(-1, 160))
    out = [struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1)]  # DLT_EN10MB
    for i, payload in enumerate(codes):
        rtp = struct.pack("!BBHII", 0x80, 0, i & 0xFFFF, i * 160, ssrc) + payload.tobytes()
        udp = struct.pack("!HHHH", 40000, 40000, 8 + len(rtp), 0) + rtp
        ip = struct.pack(
            "!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), i & 0xFFFF, 0, 64, 17, 0,
            bytes([127, 0, 0, 1]), bytes([127, 0, 0, 1]),
        )  # fmt: skip
        frame = bytes(12) + b"\x08\x00" + ip + udp
        micros = i * 20_000
        out.append(
            struct.pack("<IIII", micros // 1_000_000, micros % 1_000_000, len(frame), len(frame))
        )
        out.append(frame)
    path.write_bytes(b"".join(out))
    return path


def read_wav_mono(path: Path, channel: int = 0) -> tuple[np.ndarray, int]:
    """One channel (the first by default) of a 16-bit WAV, and its rate."""
    with wave.open(str(path), "rb") as wav:
        data = np.frombuffer(wav.readframes(wav.getnframes()), dtype="<i2")
        if wav.getnchannels() > 1:
            data = data.reshape(-1, wav.getnchannels())[:, channel]
        return data, wav.getframerate()


def self_signed_cert(folder: Path, host: str = LOCALHOST) -> tuple[Path, Path]:
    """A one-day self-signed certificate (and key) for `host`, with the IP in
    subjectAltName so TLS clients that check the name accept it."""
    folder.mkdir(parents=True, exist_ok=True)
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=localhost", "-addext", f"subjectAltName=IP:{host},DNS:localhost",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    return cert, key
