"""`mediaserver cluster`: Kamailio in front, one worker process per core behind it.

The supervisor renders a Kamailio config from `mediaserver/data/kamailio.cfg.tmpl`
(dispatcher over the workers by call load, Record-Route so in-dialog requests
stay on their worker, OPTIONS probes so a worker that answers 503 (draining,
full) or nothing is taken out, REGISTERs with a Path to any worker), starts
Kamailio on the config's first UDP listener, and starts N workers
(`mediaserver run CONFIG --worker I/N`), each on its own SIP port on 127.0.0.1,
its own slice of the RTP port range and its own admin port. RTP goes straight
to the worker (its own address in SDP).

It restarts a worker that dies, with a backoff; drains on SIGTERM (the workers
finish their calls up to `shutdown.drain_timeout`, then Kamailio stops); and on
SIGHUP restarts the workers one at a time (a rolling restart: each drains, so
Kamailio sends new calls to the others, and comes back before the next goes).

The supervisor serves the configured admin address itself, for the whole
cluster (`mediaserver.cluster_admin`: the workers' calls, records and metrics
merged); the workers' own admin ports are on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import structlog

from mediaserver.cluster_admin import ClusterAdmin
from mediaserver.config import Config, ConfigError, Listen
from mediaserver.observability.admin import AdminServer

__all__ = [
    "KAMAILIO_TEMPLATE",
    "Supervisor",
    "WorkerSlot",
    "modules_dir",
    "parse_worker",
    "plan_workers",
    "render_kamailio",
    "worker_config",
]

log = structlog.get_logger("mediaserver.cluster")

#: Shipped in the package (an installed server has no conf/ folder beside it).
KAMAILIO_TEMPLATE = Path(__file__).resolve().parent / "data" / "kamailio.cfg.tmpl"
DEFAULT_MODULES = "/usr/lib/x86_64-linux-gnu/kamailio/modules"
#: Kamailio's shared memory (MB). Its default, 64, runs out near 600 call setups a
#: second (transactions wait 5 s after they end, each call's load is tracked);
#: it is only address space until used.
KAMAILIO_SHM_MB = 512
#: Seconds between Kamailio's OPTIONS probes of each worker.
PING_INTERVAL = 1
#: Backoff of a worker that keeps dying: first and longest wait, seconds.
RESTART_MIN, RESTART_MAX = 1.0, 30.0
#: A worker that ran this long before dying starts the backoff afresh.
RESTART_RESET = 60.0
#: The digest nonce key the supervisor gives its workers (random per cluster).
SECRET_ENV = "MEDIASERVER_CLUSTER_NONCE_SECRET"


@dataclass(frozen=True)
class WorkerSlot:
    """What one worker gets: its SIP port, RTP ports and admin port."""

    index: int
    sip_port: int
    port_min: int
    port_max: int
    admin_port: int


def plan_workers(config: Config, count: int, first_port: int | None = None) -> list[WorkerSlot]:
    """Split the config's resources over `count` workers.

    SIP: ports `first_port`, `first_port + 1`, ... on 127.0.0.1 (default: the
    front port + 1). RTP: the range cut into equal even-aligned slices. Admin:
    the configured port + 1 + index (0 stays 0: any free port).

    Raises:
        ConfigError: no UDP listener for the front, or too few RTP ports.
    """
    front = front_listener(config)
    base = first_port if first_port is not None else front.port + 1
    media = config.media
    span = (media.port_max - media.port_min + 1) // count
    span -= span % 2
    if span < 4:
        raise ConfigError(
            f"media.port_min..port_max: {media.port_max - media.port_min + 1} ports "
            f"cannot be split over {count} workers"
        )
    admin = config.admin.port
    return [
        WorkerSlot(
            index=i,
            sip_port=base + i,
            port_min=media.port_min + i * span,
            port_max=media.port_min + (i + 1) * span - 1,
            admin_port=admin + 1 + i if admin else 0,
        )
        for i in range(count)
    ]


def front_listener(config: Config) -> Listen:
    """Where Kamailio listens: the config's first UDP listener."""
    front = next((listen for listen in config.sip.listen if listen.transport == "udp"), None)
    if front is None:
        raise ConfigError("sip.listen: the cluster needs a UDP listener for Kamailio")
    return front


def worker_config(config: Config, slot: WorkerSlot, nonce_secret: str | None = None) -> Config:
    """The config of one worker: its own SIP port (UDP and TCP on 127.0.0.1),
    RTP slice, admin port and name in the records (`records.worker` + wI),
    bindings shared, and `nonce_secret` as the digest nonce key unless the config
    has one; everything else shared."""
    # Bindings go through the records database: any worker reaches any phone.
    registrar = config.sip.registrar.model_copy(update={"shared": True})
    # One nonce key for all: a challenge from one worker is answered to another.
    auth = config.sip.auth
    if auth.nonce_secret is None and nonce_secret is not None:
        auth = auth.model_copy(update={"nonce_secret": nonce_secret})
    sip = config.sip.model_copy(
        update={
            "auth": auth,
            "registrar": registrar,
            "listen": [
                Listen(transport="udp", host="127.0.0.1", port=slot.sip_port),
                Listen(transport="tcp", host="127.0.0.1", port=slot.sip_port),
            ],
        }
    )
    media = config.media.model_copy(update={"port_min": slot.port_min, "port_max": slot.port_max})
    # Loopback: the supervisor serves the configured admin address for the cluster.
    admin = config.admin.model_copy(update={"host": "127.0.0.1", "port": slot.admin_port})
    prefix = config.records.worker or ""
    records = config.records.model_copy(update={"worker": f"{prefix}w{slot.index}"})
    return config.model_copy(
        update={"sip": sip, "media": media, "admin": admin, "records": records}
    )


def modules_dir(binary: str) -> str:
    """Kamailio's module folder, from ``kamailio -I`` (or the Debian default)."""
    try:
        out = subprocess.run(
            [binary, "-I"], capture_output=True, text=True, timeout=10, check=False
        ).stdout
    except (OSError, subprocess.TimeoutExpired):
        out = ""
    match = re.search(r"Default paths to modules:\s*(\S+)", out)
    if match and Path(match.group(1)).is_dir():
        return match.group(1)
    return DEFAULT_MODULES


def render_kamailio(
    template: str,
    *,
    listen: tuple[str, int],
    workers: list[tuple[str, int]],
    rundir: Path,
    mpath: str,
    ping_interval: int = PING_INTERVAL,
    max_load: int = 0,
) -> tuple[str, str]:
    """The Kamailio config and its dispatcher list for `workers` (each takes at
    most `max_load` calls at once; 0: no limit).

    Raises:
        ValueError: the template has a placeholder this does not fill.
    """
    ds_list = "".join(
        f"1 sip:{h}:{p} 0 0 duid=w{i};maxload={max_load}\n"
        for i, (h, p) in enumerate(workers, 1)
    )
    values = {
        "LISTEN_HOST": listen[0],
        "LISTEN_PORT": str(listen[1]),
        "MPATH": mpath,
        "RUNDIR": str(rundir),
        "DS_LIST": str(rundir / "dispatcher.list"),
        "PING_INTERVAL": str(ping_interval),
    }
    for key, value in values.items():
        template = template.replace(f"@{key}@", value)
    leftover = re.findall(r"@[A-Z_]+@", template)
    if leftover:
        raise ValueError(f"unfilled placeholders in the Kamailio config: {leftover}")
    return template, ds_list


class Supervisor:
    """Kamailio and the workers of one `mediaserver cluster` (see the module docstring)."""

    def __init__(
        self, config_path: str, config: Config, workers: int, first_port: int | None = None
    ) -> None:
        binary = shutil.which("kamailio")
        if binary is None:
            raise ConfigError(
                "kamailio is not installed (Debian package kamailio; scripts/setup.sh installs it)"
            )
        self.binary = binary
        self.config_path = config_path
        self.config = config
        self.front = front_listener(config)
        self.first_port = first_port
        self.slots = plan_workers(config, workers, first_port)
        # Short: the ctl unix socket path must fit in sun_path (108 bytes).
        self.rundir = Path(tempfile.mkdtemp(prefix="mscl"))
        self.kamailio: asyncio.subprocess.Process | None = None
        self.procs: dict[int, asyncio.subprocess.Process] = {}
        #: Restarts of each worker after it died (not the rolling ones).
        self.restarts: dict[int, int] = {}
        self.nonce_secret = secrets.token_hex(16)
        self.admin: AdminServer | None = None
        self._stopping = False
        self._rolling = False

    @property
    def stopping(self) -> bool:
        """SIGTERM or SIGINT came: no more restarts."""
        return self._stopping

    # -- processes ---------------------------------------------------------------------

    async def start_kamailio(self) -> None:
        config, ds_list = render_kamailio(
            KAMAILIO_TEMPLATE.read_text(),
            listen=(self.front.host, self.front.port),
            workers=[("127.0.0.1", s.sip_port) for s in self.slots],
            rundir=self.rundir,
            mpath=modules_dir(self.binary),
            max_load=self.config.sip.max_calls,
        )
        (self.rundir / "dispatcher.list").write_text(ds_list)
        cfg = self.rundir / "kamailio.cfg"
        cfg.write_text(config)
        self.kamailio = await asyncio.create_subprocess_exec(
            self.binary, "-DD", "-E", "-f", str(cfg), "-Y", str(self.rundir),
            "-P", str(self.rundir / "kamailio.pid"), "-m", str(KAMAILIO_SHM_MB),
            stdin=subprocess.DEVNULL, cwd=self.rundir,
        )  # fmt: skip
        log.info(
            "cluster_component",
            component="kamailio",
            pid=self.kamailio.pid,
            listen=f"udp:{self.front.host}:{self.front.port}",
        )

    async def start_worker(self, slot: WorkerSlot) -> asyncio.subprocess.Process:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "mediaserver", "run", self.config_path,
            "--worker", f"{slot.index}/{len(self.slots)}",
            *(["--worker-port", str(self.first_port)] if self.first_port else []),
            stdin=subprocess.DEVNULL,
            env={**os.environ, SECRET_ENV: self.nonce_secret},
        )  # fmt: skip
        self.procs[slot.index] = proc
        log.info(
            "cluster_component",
            component=f"worker{slot.index}",
            pid=proc.pid,
            sip=f"udp:127.0.0.1:{slot.sip_port}",
            rtp=f"{slot.port_min}-{slot.port_max}",
            admin=slot.admin_port,
        )
        return proc

    async def start_admin(self) -> None:
        """Serve the configured admin address for the whole cluster."""
        admin = self.config.admin
        if not admin.enabled:
            return
        if not admin.port:
            log.warning("cluster_admin_off", reason="admin.port is 0: each worker's is logged")
            return
        source = ClusterAdmin(
            {slot.index: slot.admin_port for slot in self.slots},
            admin.token,
            restarts=lambda: dict(self.restarts),
            stopping=lambda: self._stopping,
        )
        self.admin = AdminServer(source, admin.host, admin.port, admin.token)
        try:
            await self.admin.start()
        except OSError as exc:
            raise ConfigError(
                f"admin.port: cannot listen on {admin.host}:{admin.port}: {exc.strerror}"
            ) from None
        log.info("cluster_component", component="admin", listen=f"{admin.host}:{admin.port}")

    async def keep(self, slot: WorkerSlot) -> None:
        """Run one worker for as long as the cluster runs, restarting it when it dies."""
        backoff = RESTART_MIN
        loop = asyncio.get_running_loop()
        while not self._stopping:
            started = loop.time()
            proc = await self.start_worker(slot)
            code = await proc.wait()
            if self.stopping:
                return
            if self._rolling and code == 0:
                continue  # drained for a rolling restart: back at once
            backoff = RESTART_MIN if loop.time() - started > RESTART_RESET else backoff
            log.warning("worker_died", worker=slot.index, exit_code=code, restart_in=backoff)
            self.restarts[slot.index] = self.restarts.get(slot.index, 0) + 1
            await asyncio.sleep(backoff)
            backoff = min(RESTART_MAX, backoff * 2)

    async def rolling_restart(self) -> None:
        """SIGHUP: each worker drains (SIGTERM) and comes back, one at a time."""
        if self._rolling:
            return
        self._rolling = True
        try:
            for slot in self.slots:
                proc = self.procs.get(slot.index)
                if proc is None or proc.returncode is not None:
                    continue
                log.info("rolling_restart", worker=slot.index)
                proc.send_signal(signal.SIGTERM)
                await proc.wait()
                # Its successor (started by `keep`) must take calls before the next goes.
                await self.wait_ready(slot)
                await asyncio.sleep(PING_INTERVAL * 2)  # Kamailio probes it back in
            log.info("rolling_restart_done")
        finally:
            self._rolling = False

    async def wait_ready(self, slot: WorkerSlot, timeout: float = 120.0) -> bool:
        """Wait until the worker of `slot` answers OPTIONS (its models loaded)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not self.stopping and loop.time() < deadline:
            if await asyncio.to_thread(_answers_options, slot.sip_port):
                return True
            await asyncio.sleep(0.1)
        return False

    async def stop(self) -> None:
        """Drain the workers (SIGTERM), then stop Kamailio; SIGKILL what lingers."""
        self._stopping = True
        drain = self.config.shutdown.drain_timeout + 10
        for proc in self.procs.values():
            if proc.returncode is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs.values():
            await _wait_or_kill(proc, drain)
        if self.kamailio is not None and self.kamailio.returncode is None:
            self.kamailio.send_signal(signal.SIGTERM)
            await _wait_or_kill(self.kamailio, 5)
        if self.admin is not None:
            source = self.admin.source
            await self.admin.close()
            assert isinstance(source, ClusterAdmin)
            await source.close()
        shutil.rmtree(self.rundir, ignore_errors=True)

    async def run(self) -> int:
        """Start everything and supervise until SIGTERM or SIGINT."""
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        loop.add_signal_handler(signal.SIGTERM, stop.set)
        loop.add_signal_handler(signal.SIGINT, stop.set)
        loop.add_signal_handler(signal.SIGHUP, lambda: loop.create_task(self.rolling_restart()))
        await self.start_admin()  # first: a taken admin port stops the start-up here
        await self.start_kamailio()
        keepers = [loop.create_task(self.keep(slot)) for slot in self.slots]
        ready = await asyncio.gather(*(self.wait_ready(slot) for slot in self.slots))
        log.info("cluster_ready", workers=sum(ready), of=len(self.slots))
        assert self.kamailio is not None
        kamailio_done = loop.create_task(self.kamailio.wait())
        stopped = loop.create_task(stop.wait())
        await asyncio.wait({kamailio_done, stopped}, return_when=asyncio.FIRST_COMPLETED)
        code = 0
        if kamailio_done.done() and not stop.is_set():
            log.error("kamailio_died", exit_code=self.kamailio.returncode)
            code = 1
        log.info("cluster_stopping")
        await self.stop()
        for task in (*keepers, stopped, kamailio_done):
            task.cancel()
        log.info("cluster_stopped")
        return code


def _answers_options(port: int, timeout: float = 0.3) -> bool:
    """Whether 127.0.0.1:`port` answers an OPTIONS (any status)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.settimeout(timeout)
        here = sock.getsockname()[1]
        request = (
            f"OPTIONS sip:127.0.0.1:{port} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP 127.0.0.1:{here};branch=z9hG4bK{secrets.token_hex(8)};rport\r\n"
            "Max-Forwards: 70\r\nFrom: <sip:cluster@127.0.0.1>;tag=c\r\n"
            f"To: <sip:127.0.0.1:{port}>\r\nCall-ID: {secrets.token_hex(8)}@cluster\r\n"
            "CSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
        )
        try:
            sock.sendto(request.encode(), ("127.0.0.1", port))
            return sock.recv(4096).startswith(b"SIP/2.0 ")
        except OSError:
            return False


async def _wait_or_kill(proc: asyncio.subprocess.Process, timeout: float) -> None:
    try:
        await asyncio.wait_for(proc.wait(), timeout)
    except TimeoutError:
        if proc.returncode is None:
            os.kill(proc.pid, signal.SIGKILL)
            await proc.wait()


def parse_worker(value: str, config: Config, first_port: int | None = None) -> Config:
    """`run --worker I/N`: the config of worker I of N (see `worker_config`).

    Raises:
        ConfigError: not I/N with 0 <= I < N.
    """
    match = re.fullmatch(r"(\d+)/(\d+)", value)
    if match is None or not int(match.group(1)) < int(match.group(2)):
        raise ConfigError(f"--worker: expected I/N with 0 <= I < N, not {value!r}")
    index, count = int(match.group(1)), int(match.group(2))
    slot = plan_workers(config, count, first_port)[index]
    return worker_config(config, slot, os.environ.get(SECRET_ENV))
