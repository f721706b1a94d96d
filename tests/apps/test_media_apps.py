"""Built-in media apps against real peers: sipp with pcap audio and tshark, baresip."""

from __future__ import annotations

import signal
import subprocess
import time
import wave
from pathlib import Path

import numpy as np
import pytest

from mediaserver.codecs.g711 import alaw_decode
from tests.peers import best_alignment, read_wav_mono, require_binary

SIPP_PCAPS = Path("/usr/share/sip-tester")


class Capture:
    """tshark on loopback, started before the call and stopped by PID."""

    def __init__(self, path: Path, capture_filter: str, seconds: float) -> None:
        self.path = path
        tshark = require_binary("tshark")
        self.proc = subprocess.Popen(
            [
                tshark,
                "-i",
                "lo",
                "-f",
                capture_filter,
                "-a",
                f"duration:{int(seconds)}",
                "-w",
                str(path),
                "-q",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        # tshark says "Capturing on 'Loopback: lo'" once it is really capturing.
        assert self.proc.stderr is not None
        deadline = time.monotonic() + 15
        line = b""
        while b"Capturing" not in line and time.monotonic() < deadline:
            line = self.proc.stderr.readline()
            if not line and self.proc.poll() is not None:
                raise RuntimeError("tshark exited before capturing")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=5)


def rtp_packets(pcap: Path, *, decode_port: int | None = None) -> list[tuple[int, int, bytes]]:
    """(payload type, sequence, payload) of every RTP packet in `pcap`, in capture order."""
    decode = (
        ["-d", f"udp.port=={decode_port},rtp"] if decode_port else ["-o", "rtp.heuristic_rtp:TRUE"]
    )
    out = subprocess.run(
        [
            "tshark",
            "-r",
            str(pcap),
            *decode,
            "-Y",
            "rtp",
            "-T",
            "fields",
            "-e",
            "rtp.p_type",
            "-e",
            "rtp.seq",
            "-e",
            "rtp.payload",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    packets = []
    for line in out.splitlines():
        fields = line.split("\t")
        if len(fields) < 3 or not fields[0]:
            continue
        packets.append((int(fields[0]), int(fields[1]), bytes.fromhex(fields[2].replace(":", ""))))
    return packets


def test_sipp_pcap_echo_is_bit_exact_and_dtmf_reported(start_server, sipp, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    server = start_server(routes={"echo": {"app": "echo", "duration": 0}})
    rtp_min, rtp_max = server.config["media"]["port_min"], server.config["media"]["port_max"]
    (tmp_path / "pcap").symlink_to(SIPP_PCAPS)
    capture = Capture(tmp_path / "echo.pcapng", f"udp and src portrange {rtp_min}-{rtp_max}", 40)
    try:
        result = sipp(["-sn", "uac_pcap", "-s", "echo", server.target], timeout=40)
    finally:
        capture.stop()
    assert result.ok, result.describe()
    log = server.wait_log("call_ended")
    assert "digit=1" in log and "via=rfc4733" in log, server.log_tail()

    sent = b"".join(p for pt, _, p in rtp_packets(SIPP_PCAPS / "g711a.pcap") if pt == 8)
    echoed_pkts = [
        (seq, p) for pt, seq, p in rtp_packets(capture.path, decode_port=None) if pt == 8
    ]
    echoed = b"".join(p for _, p in echoed_pkts)
    assert len(echoed) >= 0.95 * len(sent), (len(echoed), len(sent))
    # every echoed packet is one 20 ms PCMA frame, in sequence
    assert {len(p) for _, p in echoed_pkts} == {160}
    lag, corr = best_alignment(
        alaw_decode(np.frombuffer(sent, np.uint8)), alaw_decode(np.frombuffer(echoed, np.uint8))
    )
    assert corr > 0.99, corr
    # A-law decode/encode is lossless for valid codes: the echo is bit exact
    aligned = echoed[lag : lag + len(sent)]
    same = sum(a == b for a, b in zip(aligned, sent))
    assert same >= 0.99 * len(aligned), (same, len(aligned))


def test_inactivity_timeout_ends_silent_call_with_bye(start_server, sipp) -> None:  # type: ignore[no-untyped-def]
    from tests.peers import SIPP_SCENARIOS

    server = start_server(
        routes={"echo": {"app": "echo", "duration": 0}},
        media={"inactivity_timeout": 1.5},
    )
    # uac_server_bye sends no RTP and waits for our BYE
    result = sipp(
        ["-sf", str(SIPP_SCENARIOS / "uac_server_bye.xml"), "-s", "echo", server.target], timeout=20
    )
    assert result.ok, result.describe()
    log = server.wait_log("call_ended")
    assert "rtp_timeout" in log and "reason='rtp timeout'" in log


def test_baresip_echo_correlates_with_what_it_said(start_server, baresip) -> None:  # type: ignore[no-untyped-def]
    server = start_server(routes={"echo": {"app": "echo", "duration": 0}})
    result = baresip(
        server.uri("echo"), seconds=25, text="one two three four five six seven eight nine ten"
    )
    assert result.established, result.describe()
    heard_path = result.heard_wav
    assert heard_path is not None, result.describe()
    source, rate = read_wav_mono(result.source_wav)
    heard, heard_rate = read_wav_mono(heard_path)
    assert rate == heard_rate == 8000
    _lag, corr = best_alignment(source, heard)
    assert corr >= 0.95, corr
    assert "call_ended" in server.wait_log("call_ended")


@pytest.mark.parametrize(
    ("codec", "rate", "channels"),
    [("g722/16000/1", 16000, 1), ("opus/48000/2", 48000, 2)],
    ids=["g722", "opus"],
)
def test_baresip_wideband_echo(
    start_server, baresip, tmp_path: Path, codec: str, rate: int, channels: int
) -> None:  # type: ignore[no-untyped-def]
    from tests.peers import speech_wav

    server = start_server(
        routes={"echo": {"app": "echo", "duration": 0}},
        media={"codecs": ["G722", "opus", "PCMU", "telephone-event"]},
    )
    narrow = speech_wav("one two three four five six", tmp_path / "speech")
    # baresip's aufile wants the codec's own rate and channel count
    source = tmp_path / f"speech_{rate}_{channels}.wav"
    subprocess.run(
        ["sox", str(narrow), "-r", str(rate), "-c", str(channels), str(source)],
        check=True,
        timeout=60,
    )
    result = baresip(server.uri("echo"), seconds=20, codec=codec, source_wav=source)
    assert result.established, result.describe()
    assert result.heard_wav is not None
    sent, _ = read_wav_mono(source)
    heard, heard_rate = read_wav_mono(result.heard_wav)
    assert heard_rate == rate
    _lag, corr = best_alignment(sent, heard)
    # lossy codecs, twice (baresip -> server -> baresip): a high but not perfect match
    assert corr >= 0.9, corr
    log = server.wait_log("call_ended")
    assert "lost=0" in log


def test_baresip_dtmf_reported(start_server, baresip) -> None:  # type: ignore[no-untyped-def]
    server = start_server(routes={"dtmf": {"app": "dtmf", "duration": 0}})
    result = baresip(server.uri("dtmf"), seconds=20, pad_seconds=6, dtmf="159#")
    assert result.established, result.describe()
    log = server.wait_log("dtmf_collected", count=4)
    digits = [
        line.split("digit=")[1].split()[0] for line in log.splitlines() if "dtmf_collected" in line
    ]
    assert "".join(digits) == "159#", log


def test_playback_heard_by_baresip(start_server, baresip, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from tests.peers import speech_wav

    prompt = speech_wav("this is the playback test", tmp_path / "prompt", pad_seconds=0.5)
    server = start_server(routes={"play": {"app": "playback", "file": str(prompt), "duration": 0}})
    result = baresip(server.uri("play"), seconds=20, pad_seconds=10)
    assert result.established and result.remote_hangup, result.describe()
    heard_path = result.heard_wav
    assert heard_path is not None
    source, _ = read_wav_mono(prompt)
    heard, _ = read_wav_mono(heard_path)
    _lag, corr = best_alignment(source, heard)
    assert corr >= 0.95, corr


def test_record_app_and_stereo_call_recording(start_server, sipp, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    recordings = tmp_path / "calls"
    server = start_server(
        routes={"rec": {"app": "record", "duration": 0, "directory": str(tmp_path / "rec")}},
        media={"record_calls": True, "recordings_dir": str(recordings)},
    )
    (tmp_path / "pcap").symlink_to(SIPP_PCAPS)
    result = sipp(["-sn", "uac_pcap", "-s", "rec", server.target], timeout=40)
    assert result.ok, result.describe()
    server.wait_log("recorded")
    sent = b"".join(p for pt, _, p in rtp_packets(SIPP_PCAPS / "g711a.pcap") if pt == 8)
    reference = alaw_decode(np.frombuffer(sent, np.uint8))
    (mono,) = list((tmp_path / "rec").glob("*.wav"))
    recorded, rate = read_wav_mono(mono)
    assert rate == 8000
    assert best_alignment(reference, recorded)[1] > 0.99
    (stereo,) = list(recordings.glob("*.wav"))
    with wave.open(str(stereo), "rb") as wav:
        assert wav.getnchannels() == 2 and wav.getframerate() == 8000
        both = np.frombuffer(wav.readframes(wav.getnframes()), dtype="<i2").reshape(-1, 2)
    assert best_alignment(reference, both[:, 0])[1] > 0.99  # caller on the left
    assert not both[:, 1].any()  # the record app says nothing


@pytest.fixture(autouse=True)
def _needs_tshark() -> None:
    require_binary("tshark")
