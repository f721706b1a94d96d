"""Workers behind a real Kamailio 5.6 dispatcher (loopback only, bounded).

Kamailio runs in the foreground (``kamailio -DD -E``) with the config in
``mediaserver/data/kamailio.cfg.tmpl`` (the one `mediaserver cluster` renders): it Record-Routes every INVITE, sends
each to the worker in its dispatcher list with the fewest calls up, fails over on
500/503/timeout, probes the workers with OPTIONS (only a 2xx keeps one active,
so a draining worker's 503 takes it out) and relays in-dialog requests with
``loose_route`` + ``t_relay``. sipp calls through it with
``tests/sipp/uac_rr.xml``, which follows the Record-Route set for ACK and BYE.

Kamailio is stopped by its PID (SIGTERM, then SIGKILL) at teardown.
"""

from __future__ import annotations

import concurrent.futures
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import IO, Protocol

import pytest

from mediaserver.cluster import KAMAILIO_TEMPLATE, modules_dir, render_kamailio
from tests.peers import (
    LOCALHOST,
    SIPP_SCENARIOS,
    ServerProcess,
    SippResult,
    free_port,
    parse_sip,
    require_binary,
    sip_options,
    which,
)

UAC_RR = SIPP_SCENARIOS / "uac_rr.xml"
PING_INTERVAL = 1  # seconds between dispatcher OPTIONS probes

# INVITE through the proxy, ACK via [routes], then wait for the server's BYE
# (it must come through Kamailio) and answer it 200.
UAC_RR_SERVER_BYE = """\
<?xml version="1.0" encoding="ISO-8859-1" ?>
<!DOCTYPE scenario SYSTEM "sipp.dtd">
<scenario name="call through a Record-Route proxy, server hangs up">
  <send retrans="500">
    <![CDATA[

      INVITE sip:[service]@[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: sipp <sip:sipp@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
      To: <sip:[service]@[remote_ip]:[remote_port]>
      Call-ID: [call_id]
      CSeq: 1 INVITE
      Contact: <sip:sipp@[local_ip]:[local_port]>
      Max-Forwards: 70
      Content-Type: application/sdp
      Content-Length: [len]

      v=0
      o=sipp 53655765 2353687637 IN IP[local_ip_type] [local_ip]
      s=-
      c=IN IP[media_ip_type] [media_ip]
      t=0 0
      m=audio [media_port] RTP/AVP 0
      a=rtpmap:0 PCMU/8000

    ]]>
  </send>
  <recv response="100" optional="true"/>
  <recv response="180" optional="true"/>
  <recv response="183" optional="true"/>
  <recv response="200" rrs="true"/>
  <send>
    <![CDATA[

      ACK [next_url] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      [routes]
      From: sipp <sip:sipp@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
      To: <sip:[service]@[remote_ip]:[remote_port]>[peer_tag_param]
      Call-ID: [call_id]
      CSeq: 1 ACK
      Max-Forwards: 70
      Content-Length: 0

    ]]>
  </send>
  <recv request="BYE"/>
  <send>
    <![CDATA[

      SIP/2.0 200 OK
      [last_Via:]
      [last_From:]
      [last_To:]
      [last_Call-ID:]
      [last_CSeq:]
      Contact: <sip:sipp@[local_ip]:[local_port]>
      Content-Length: 0

    ]]>
  </send>
  <pause milliseconds="200"/>
</scenario>
"""


# --------------------------------------------------------------------------- Kamailio


class Kamailio:
    """One Kamailio dispatcher in the foreground, in front of ``workers``."""

    def __init__(
        self, binary: str, workers: Sequence[ServerProcess], logdir: Path, *, ping_interval: int
    ) -> None:
        self.binary = binary
        self.workers = list(workers)
        self.port = free_port()
        self.host = LOCALHOST
        # The ctl unix socket path must stay short (sun_path is 108 bytes).
        self.rundir = Path(tempfile.mkdtemp(prefix="kam"))
        self.log_path = logdir / "kamailio.log"
        self.config_path = self.rundir / "kamailio.cfg"
        self.ds_list = self.rundir / "dispatcher.list"
        self.ctl = f"unix:{self.rundir}/kamailio_ctl"
        self.ping_interval = ping_interval
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        self.ready = False

    @property
    def target(self) -> str:
        """``host:port`` for sipp."""
        return f"{self.host}:{self.port}"

    def render(self) -> None:
        """Write the dispatcher list and the config (the one `mediaserver cluster` uses)."""
        config, ds_list = render_kamailio(
            KAMAILIO_TEMPLATE.read_text(),
            listen=(self.host, self.port),
            workers=[(w.host, w.port) for w in self.workers],
            rundir=self.rundir,
            mpath=modules_dir(self.binary),
            ping_interval=self.ping_interval,
        )
        self.ds_list.write_text(ds_list)
        self.config_path.write_text(config)

    def start(self, timeout: float = 10.0) -> Kamailio:
        """Start Kamailio and wait until it answers OPTIONS on its own URI."""
        self.render()
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = self.log_path.open("ab")
        self._log = log
        self._proc = subprocess.Popen(
            [
                self.binary,
                "-DD",
                "-E",
                "-f",
                str(self.config_path),
                "-Y",
                str(self.rundir),
                "-P",
                str(self.rundir / "kamailio.pid"),
            ],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=self.rundir,
        )
        deadline = time.monotonic() + timeout
        while True:
            if self._proc.poll() is not None:
                raise RuntimeError(
                    f"kamailio exited with code {self._proc.returncode}\n{self.log_tail()}"
                )
            reply = sip_options(self.host, self.port, timeout=0.3)
            if reply is not None and reply.status == 200:
                self.ready = True
                return self
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"kamailio did not answer OPTIONS in {timeout} s\n{self.log_tail()}"
                )

    def stop(self) -> None:
        """SIGTERM by PID, SIGKILL after 5 s; remove the run folder."""
        proc = self._proc
        if proc is not None and proc.poll() is None:
            os.kill(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
        if self._log is not None:
            self._log.close()
            self._log = None
        shutil.rmtree(self.rundir, ignore_errors=True)

    def running(self) -> bool:
        """True while the Kamailio main process is alive."""
        return self._proc is not None and self._proc.poll() is None

    def log_text(self) -> str:
        """Everything Kamailio logged so far."""
        try:
            return self.log_path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, lines: int = 60) -> str:
        """The last lines of the log, framed for an error message."""
        tail = "\n".join(self.log_text().splitlines()[-lines:])
        return f"--- kamailio log tail ({self.log_path}) ---\n{tail}\n--- end ---"

    def kamcmd(self, *args: str) -> str:
        """Run ``kamcmd -s CTL ARGS`` and return its output."""
        kamcmd = which("kamcmd") or str(Path(self.binary).with_name("kamcmd"))
        done = subprocess.run(
            [kamcmd, "-s", self.ctl, *args], capture_output=True, text=True, timeout=10, check=False
        )
        return done.stdout + done.stderr

    def dispatcher_flags(self) -> dict[str, str]:
        """``{uri: flags}`` from ``dispatcher.list`` (flags e.g. "AP" active, "IP" inactive)."""
        out = self.kamcmd("dispatcher.list")
        return dict(re.findall(r"URI:\s*(\S+)\s+FLAGS:\s*(\S+)", out))

    def wait_flags(self, worker: ServerProcess, first: str, timeout: float) -> dict[str, str]:
        """Wait until ``worker``'s dispatcher state starts with ``first`` ("A" or "I")."""
        uri = f"sip:{worker.host}:{worker.port}"
        deadline = time.monotonic() + timeout
        while True:
            flags = self.dispatcher_flags()
            if flags.get(uri, "").startswith(first):
                return flags
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"{uri} not in state {first}* after {timeout} s: {flags}\n{self.log_tail()}"
                )
            time.sleep(0.2)


class StartKamailio(Protocol):
    """Signature of the ``kamailio_proxy`` fixture."""

    def __call__(
        self, workers: Sequence[ServerProcess], *, ping_interval: int = PING_INTERVAL
    ) -> Kamailio: ...


@pytest.fixture
def kamailio_proxy(kamailio: str, tmp_path: Path) -> Iterator[StartKamailio]:
    """Factory: ``kamailio_proxy([w1, w2], ping_interval=1) -> Kamailio``, running.

    Every Kamailio it started is stopped by PID at teardown.
    """
    require_binary("kamcmd")
    started: list[Kamailio] = []

    def start(workers: Sequence[ServerProcess], *, ping_interval: int = PING_INTERVAL) -> Kamailio:
        proxy = Kamailio(kamailio, workers, tmp_path, ping_interval=ping_interval)
        started.append(proxy)
        return proxy.start()

    yield start

    died = [p for p in started if p.ready and not p.running()]
    for proxy in started:
        proxy.stop()
        print(proxy.log_tail(80))  # shown by pytest only when the test fails
    if died:
        pytest.fail("kamailio died during the test", pytrace=False)


# --------------------------------------------------------------------------- helpers


def ended(server: ServerProcess) -> list[str]:
    """The server's ``call_ended`` log lines."""
    return [line for line in server.log_text().splitlines() if "call_ended" in line]


def by_remote(lines: list[str]) -> int:
    """How many ``call_ended`` lines say the far end hung up (its BYE reached us)."""
    return sum(1 for line in lines if "by=remote" in line or "'by': 'remote'" in line)


def wait_for(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll ``predicate`` every 0.1 s until it is true; fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.1)


def uac_rr(proxy: Kamailio, *, calls: int, rate: int, hold_ms: int = 0) -> list[str]:
    """sipp arguments for ``calls`` uac_rr calls to ``hold`` through ``proxy``."""
    return [
        "-sf",
        str(UAC_RR),
        "-s",
        "hold",
        "-r",
        str(rate),
        "-m",
        str(calls),
        "-d",
        str(hold_ms),
        proxy.target,
    ]


def assert_all_ok(result: SippResult, calls: int, proxy: Kamailio) -> None:
    assert result.ok, result.describe() + "\n" + proxy.log_tail()
    assert result.stat("SuccessfulCall(C)") == calls, result.describe()
    assert result.stat("FailedCall(C)") == 0, result.describe()


# --------------------------------------------------------------------------- tests


def test_calls_spread_over_two_workers(start_server, sipp, kamailio_proxy) -> None:  # type: ignore[no-untyped-def]
    w1 = start_server(routes={"hold": {"duration": 0}})
    w2 = start_server(routes={"hold": {"duration": 0}})
    proxy = kamailio_proxy([w1, w2])
    proxy.wait_flags(w1, "A", 5)
    proxy.wait_flags(w2, "A", 5)

    # Calls of 1 s at 10 a second: each new one goes to the worker with fewer up.
    result = sipp(uac_rr(proxy, calls=20, rate=10, hold_ms=1000), timeout=30, stats=True)
    assert_all_ok(result, 20, proxy)

    # The BYEs travelled sipp -> Kamailio -> worker; wait for the workers to log them.
    wait_for(lambda: len(ended(w1)) + len(ended(w2)) >= 20, 5, "20 call_ended lines")
    e1, e2 = ended(w1), ended(w2)
    assert len(e1) + len(e2) == 20, (e1, e2)
    # By call load: both workers took about half.
    assert len(e1) >= 7 and len(e2) >= 7, (len(e1), len(e2))
    assert by_remote(e1) == len(e1) and by_remote(e2) == len(e2), (e1, e2)
    # Every ACK went through the proxy via the Record-Route set and confirmed its call.
    confirmed = w1.log_text().count("call_confirmed") + w2.log_text().count("call_confirmed")
    assert confirmed == 20
    # Every BYE went through the proxy and got a 200 back through it.
    assert len(result.received(status=200, method="BYE")) >= 20
    assert not result.received(status=481), result.describe()
    assert not result.received(status=404), result.describe()
    assert "Traceback" not in w1.log_text() + w2.log_text()
    assert "without our Route" not in proxy.log_text(), proxy.log_tail()


def test_draining_worker_is_taken_out(start_server, sipp, kamailio_proxy) -> None:  # type: ignore[no-untyped-def]
    w1 = start_server(routes={"hold": {"duration": 0}}, shutdown={"drain_timeout": 30})
    w2 = start_server(routes={"hold": {"duration": 0}}, shutdown={"drain_timeout": 30})
    proxy = kamailio_proxy([w1, w2])
    proxy.wait_flags(w1, "A", 5)
    proxy.wait_flags(w2, "A", 5)

    # One held call on each worker (the second goes to the one without), so the draining one has a call
    # to wait for: a worker with no calls exits at once on SIGTERM.
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        held = pool.submit(
            sipp, uac_rr(proxy, calls=2, rate=20, hold_ms=8000), 30, stats=True, name="held"
        )
        wait_for(
            lambda: "call_confirmed" in w1.log_text() and "call_confirmed" in w2.log_text(),
            8,
            "one confirmed call on each worker",
        )

        w1.send_signal(signal.SIGTERM)
        reply = None
        for _ in range(20):
            reply = sip_options(w1.host, w1.port, timeout=0.5)
            if reply is not None and reply.status == 503:
                break
            time.sleep(0.1)
        assert reply is not None and reply.status == 503, reply
        assert reply.header("Retry-After") is not None
        # The dispatcher's OPTIONS probe gets 503 and marks the worker inactive.
        proxy.wait_flags(w1, "I", 4 * PING_INTERVAL + 2)
        assert w1.running(), "the draining worker exited while it still had a call"

        before1, before2 = len(ended(w1)), len(ended(w2))
        result = sipp(uac_rr(proxy, calls=10, rate=10), timeout=20, stats=True, name="after")
        assert_all_ok(result, 10, proxy)
        wait_for(lambda: len(ended(w2)) >= before2 + 10, 5, "10 more calls ended on w2")
        assert len(ended(w2)) == before2 + 10
        assert len(ended(w1)) == before1 == 0, ended(w1)

        # The held calls end with sipp's BYE through Kamailio, the draining worker's too.
        held_result = held.result(timeout=40)
    assert_all_ok(held_result, 2, proxy)

    # Its last call over, the draining worker stops by itself.
    assert w1.wait(15) == 0, w1.log_tail()
    log1 = w1.log_text()
    assert "draining" in log1
    assert len(ended(w1)) == 1 and by_remote(ended(w1)) == 1, ended(w1)
    assert len(ended(w2)) == 11
    assert "Traceback" not in log1 and "Traceback" not in w2.log_text()


def test_server_bye_goes_through_the_proxy(start_server, sipp, kamailio_proxy, tmp_path) -> None:  # type: ignore[no-untyped-def]
    worker = start_server(routes={"hold": {"duration": 1}})
    proxy = kamailio_proxy([worker])
    proxy.wait_flags(worker, "A", 5)
    scenario = tmp_path / "uac_rr_server_bye.xml"
    scenario.write_text(UAC_RR_SERVER_BYE)

    result = sipp(["-sf", str(scenario), "-s", "hold", proxy.target], timeout=15)
    assert result.ok, result.describe() + "\n" + proxy.log_tail()

    byes = result.received(method="BYE")
    assert byes, result.describe()
    bye = parse_sip(byes[0].raw)
    vias = [part.strip() for v in bye.header_all("Via") for part in v.split(",")]
    # Kamailio's Via on top, the worker's below it: the BYE came through the proxy.
    assert len(vias) >= 2, bye.first_line + "\n" + "\n".join(vias)
    assert f"{proxy.host}:{proxy.port}" in vias[0], vias
    assert f"{worker.host}:{worker.port}" in vias[1], vias
    # Kamailio consumed its own Route entry; the Request-URI is sipp's Contact.
    assert bye.first_line.startswith("BYE sip:sipp@127.0.0.1:"), bye.first_line
    assert bye.header_all("Route") == [], bye.headers

    wait_for(lambda: bool(ended(worker)), 5, "call_ended on the worker")
    assert "by=local" in ended(worker)[0] or "'by': 'local'" in ended(worker)[0]
    assert re.search(r"in-dialog BYE sip:sipp@\S+ via route", proxy.log_text()), proxy.log_tail()


def test_503_from_draining_worker_fails_over(start_server, sipp, kamailio_proxy) -> None:  # type: ignore[no-untyped-def]
    workers = [
        start_server(routes={"hold": {"duration": 0}}, shutdown={"drain_timeout": 30}),
        start_server(routes={"hold": {"duration": 0}}, shutdown={"drain_timeout": 30}),
    ]
    # Probes every 30 s: none happens during the test, so only the INVITE's 503
    # (and the failure route) can steer calls away from the draining worker.
    proxy = kamailio_proxy(workers, ping_interval=30)

    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        held = pool.submit(
            sipp, uac_rr(proxy, calls=2, rate=20, hold_ms=4000), 20, stats=True, name="held"
        )
        wait_for(
            lambda: all("call_confirmed" in w.log_text() for w in workers),
            8,
            "one confirmed call on each worker",
        )
        # The worker that took the first call wins the ties of the call load (1 and
        # 1): it drains, so the next INVITE goes to it and gets 503.
        first = next(w for w in workers if "call_id=1-" in w.log_text())
        other = next(w for w in workers if w is not first)
        first_uri = f"sip:{first.host}:{first.port}"
        first.send_signal(signal.SIGTERM)
        wait_for(lambda: "draining" in first.log_text(), 5, "the first worker to start draining")
        assert proxy.dispatcher_flags().get(first_uri, "").startswith("A")

        result = sipp(uac_rr(proxy, calls=4, rate=10), timeout=20, stats=True, name="after")
        assert_all_ok(result, 4, proxy)
        held_result = held.result(timeout=30)
    assert_all_ok(held_result, 2, proxy)

    # The first call sent to the draining worker got 503 and was retried on the
    # other; the failure route then marked it inactive, so every new call ended there.
    assert f"worker {first_uri} failed" in proxy.log_text(), proxy.log_tail()
    assert not proxy.dispatcher_flags().get(first_uri, "A").startswith("A")
    assert len(ended(other)) == 5
    assert first.wait(10) == 0, first.log_tail()
    assert len(ended(first)) == 1 and by_remote(ended(first)) == 1


def test_dead_worker_fails_over(start_server, sipp, kamailio_proxy) -> None:  # type: ignore[no-untyped-def]
    workers = [start_server(routes={"hold": {"duration": 0}}) for _ in range(2)]
    proxy = kamailio_proxy(workers)
    for worker in workers:
        proxy.wait_flags(worker, "A", 5)
    # With no calls up the dispatcher picks the same worker every time (its tie
    # winner): find it with one call, then kill it.
    assert_all_ok(sipp(uac_rr(proxy, calls=1, rate=10), timeout=20, stats=True), 1, proxy)
    wait_for(lambda: sum(len(ended(w)) for w in workers) == 1, 5, "the first call ended")
    dead = next(w for w in workers if ended(w))
    alive = next(w for w in workers if w is not dead)

    dead.kill()
    # Before the probes notice, the dead worker is still picked: its INVITE branch
    # times out (tm fr_timer 2 s) and the failure route retries on the other.
    result = sipp(uac_rr(proxy, calls=4, rate=10), timeout=20, stats=True)
    assert_all_ok(result, 4, proxy)
    wait_for(lambda: len(ended(alive)) >= 4, 5, "4 calls ended on the live worker")
    assert len(ended(alive)) == 4
    assert "trying the next one" in proxy.log_text(), proxy.log_tail()
    proxy.wait_flags(dead, "I", 4 * PING_INTERVAL + 3)
