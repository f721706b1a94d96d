"""The calls page (static/calls.html) in headless Chromium, served by a real AdminServer.

A realistic finished call (turns with latency splits, a real and a false
barge-in, two errors, SIP and tool events, hostile caller text) is served on
127.0.0.1; Chromium loads ``/?call=<id>``, runs the page's script and dumps the
resulting DOM, which is parsed and checked: one waterfall row per turn with its
bars laid out left to right on a common scale and labelled with their ms, the
barge-ins and errors listed, and caller text rendered as text, never as markup.
A screenshot is kept as a test artifact (``$TEST_ARTIFACTS`` or
``<repo>/test-artifacts/calls_page.png``).

Chromium is required: a missing binary fails the test unless
``MEDIASERVER_ALLOW_SKIP=1`` (see ``tests.peers.require_binary``).
"""

from __future__ import annotations

import asyncio
import copy
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from tests.observability import FakeSource, serving, summary
from tests.observability.chromium import (
    CHROMIUM_TIMEOUT,
    Node,
    chromium_command,
    keep_artifact,
    parse_dom,
    run_chromium,
)
from tests.peers import REPO_ROOT, require_binary

T0 = 1_714_564_800.0
CALL = "c-7f3a9e"
TOKEN = "s3cret-T0ken_~.+/="
XSS_CALLER = "<script>alert(1)</script> is my order late?"
XSS_ASSISTANT = "<img src=x onerror=\"document.title='pwned'\">Let me check."

# ---------------------------------------------------------------- the call


def _event(seq: int, dt: float, kind: str, /, **data: Any) -> dict[str, Any]:
    return {"seq": seq, "t": T0 + dt, "kind": kind, "data": data}


TURN_LATENCIES: dict[int, dict[str, float]] = {
    1: {
        "voice_to_voice_ms": 912.4,
        "endpointing_ms": 400.0,
        "stt_finalise_ms": 38.2,
        "llm_first_token_ms": 301.7,
        "llm_first_sentence_ms": 455.3,
        "tts_first_audio_ms": 120.5,
        "first_frame_ms": 12.1,
        "overhead_ms": 52.0,
    },
    2: {
        "voice_to_voice_ms": 1207.0,
        "endpointing_ms": 610.0,
        "stt_finalise_ms": 42.0,
        "llm_first_token_ms": 388.0,
        "llm_first_sentence_ms": 512.0,
        "tts_first_audio_ms": 131.0,
        "first_frame_ms": 9.0,
        "overhead_ms": 36.0,
    },
    3: {
        # The LLM timed out once and was retried: a slow turn.
        "voice_to_voice_ms": 2463.0,
        "endpointing_ms": 405.0,
        "stt_finalise_ms": 35.0,
        "llm_first_token_ms": 1802.0,
        "tts_first_audio_ms": 140.0,
        "overhead_ms": 81.0,
    },
    4: {
        # A canned reply: no LLM, and the parts need not add up.
        "voice_to_voice_ms": 640.0,
        "endpointing_ms": 420.0,
        "stt_finalise_ms": 25.0,
        "tts_first_audio_ms": 90.0,
    },
}


def realistic_call() -> dict[str, Any]:
    """A finished support call, as CallRecord.detail() returns it."""
    lat = TURN_LATENCIES
    events = [
        _event(1, 0.0, "sip", event="incoming", caller="sip:+4722334455@127.0.0.1", to="support"),
        _event(2, 0.4, "sip", event="confirmed", codec="PCMU"),
        _event(3, 0.5, "state", state="greeting"),
        _event(
            4,
            6.2,
            "turn",
            turn=1,
            caller_text="Hi, I'd like to check on my order.",
            assistant_generated="Sure, what is the order number?",
            assistant_heard="Sure, what is the order number?",
            latency_ms=lat[1],
        ),
        _event(5, 11.8, "dtmf", digits="4711"),
        _event(
            6,
            12.4,
            "tool",
            name="check_order",
            arguments={"order_id": "A-4711"},
            result="Order A-4711: shipped Monday, ETA Thursday",
            duration_s=0.042,
            error=None,
        ),
        _event(
            7,
            13.1,
            "turn",
            turn=2,
            caller_text=XSS_CALLER,
            assistant_generated=XSS_ASSISTANT + " Your order shipped on Monday.",
            assistant_heard=XSS_ASSISTANT + " Your order",
            latency_ms=lat[2],
        ),
        _event(
            8,
            14.9,
            "barge_in",
            reply=2,
            stop_ms=182.0,
            heard="Let me check. Your order",
            generated="Let me check. Your order shipped on Monday and should arrive by Thursday.",
            false=False,
        ),
        _event(
            9,
            19.0,
            "error",
            kind="llm_timeout",
            stage="llm",
            error="no first token within 1.5 s",
            recovery="retry",
        ),
        _event(
            10,
            20.6,
            "turn",
            turn=3,
            caller_text="Can I change the delivery address?",
            assistant_generated="Yes, I can update it. What is the new address?",
            assistant_heard="Yes, I can update it. What is the new address?",
            latency_ms=lat[3],
        ),
        _event(
            11,
            22.0,
            "barge_in",
            reply=3,
            stop_ms=95.0,
            heard="",
            generated="Yes, I can update it.",
            false=True,
        ),
        _event(
            12,
            30.2,
            "error",
            kind="tts_failed",
            stage="tts",
            error="espeak-ng exited with status 1 & <no audio>",
            recovery="fallback_voice",
        ),
        _event(
            13,
            31.0,
            "turn",
            turn=4,
            caller_text="Thanks, bye.",
            assistant_generated="Goodbye!",
            assistant_heard="Goodbye!",
            latency_ms=lat[4],
        ),
        _event(14, 33.5, "sip", event="ended", by="caller", reason="bye"),
        _event(15, 33.5, "final", reason="bye", by="caller", state="ended"),
    ]
    return summary(
        CALL,
        call_id="a84b4c76e66710@127.0.0.1",
        caller="sip:+4722334455@127.0.0.1",
        started_at=T0,
        ended_at=T0 + 33.5,
        end_reason="bye",
        ended_by="caller",
        turns=4,
        barge_ins=2,
        errors=2,
    ) | {"events": events, "final_state": {"state": "ended", "turns": 4, "media": {"lost": 3}}}


def call_source() -> FakeSource:
    detail = realistic_call()
    brief = {k: v for k, v in detail.items() if k not in ("events", "final_state")}
    live = summary("c-live", ended_at=None, end_reason=None, ended_by=None, turns=1)
    source = FakeSource(live=[live], recent=[brief], details={CALL: detail})
    source.campaigns = [
        {
            "id": "c0ffee",
            "name": "flu shots",
            "state": "running",
            "contacts": 500,
            "in_progress": 12,
            "states": {"done": 240, "pending": 248, "dialing": 12},
            "outcomes": {"completed": 200, "busy": 30, "dnc": 10},
        }
    ]
    return source


@dataclass
class Rendered:
    dom: Node
    html: str
    screenshot: Path


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> Rendered:
    """The call's detail page after its script ran, and a screenshot of it."""
    binary = require_binary("chromium")
    tmp = tmp_path_factory.mktemp("calls_page")
    shot = tmp / "calls_page.png"

    async def main() -> str:
        # A token made of RFC 6750 characters: the page sends it as a Bearer header.
        async with serving(call_source(), token=TOKEN) as (_, base):
            url = f"{base}/?call={quote(CALL)}&token={quote(TOKEN, safe='')}"
            dom = await run_chromium(
                chromium_command(binary, tmp / "profile-dom", "--dump-dom", url), tmp
            )
            await run_chromium(
                chromium_command(
                    binary,
                    tmp / "profile-shot",
                    f"--screenshot={shot}",
                    "--window-size=1280,1600",
                    url,
                ),
                tmp,
            )
            return dom.decode("utf-8")

    html = asyncio.run(asyncio.wait_for(main(), 3 * CHROMIUM_TIMEOUT))
    keep_artifact(shot, "calls_page.png")
    return Rendered(parse_dom(html), html, shot)


def fmt_ms(ms: float) -> str:
    """The page's fmtMs: rounded half up, thousands separated."""
    if 0 < ms < 1:
        return "<1 ms"
    return f"{math.floor(ms + 0.5):,} ms"


# ---------------------------------------------------------------- tests


SEGMENTS = [
    ("endpointing", "endpointing_ms"),
    ("stt-finalise", "stt_finalise_ms"),
    ("llm-first-token", "llm_first_token_ms"),
    ("tts-first-audio", "tts_first_audio_ms"),
]


def expected_bars(latency: dict[str, float]) -> list[tuple[str, float]]:
    bars = [(cls, latency[key]) for cls, key in SEGMENTS if key in latency]
    rest = latency["voice_to_voice_ms"] - sum(ms for _, ms in bars)
    if rest >= 0.5:
        bars.append(("rest", rest))
    return bars


def test_waterfall_rows_and_bars(rendered: Rendered) -> None:
    waterfall = rendered.dom.one("div", id="waterfall")
    rows = waterfall.all("div", "waterfall-row")
    assert [r.attrs["data-turn"] for r in rows] == ["1", "2", "3", "4"]
    scales = []
    for row in rows:
        turn = int(row.attrs["data-turn"])
        latency = TURN_LATENCIES[turn]
        bars = row.all("div", "bar")
        got = [
            (next(c for c in b.classes if c.startswith("bar-")), b.one(cls="bar-label").text())
            for b in bars
        ]
        want = [(f"bar-{cls}", fmt_ms(ms)) for cls, ms in expected_bars(latency)]
        assert got == want, f"turn {turn}"
        # Left to right, each bar starting where the previous one ended.
        edge = 0.0
        for bar, (_, ms) in zip(bars, expected_bars(latency)):
            assert bar.style("left") == pytest.approx(edge, abs=0.01)
            edge = bar.style("left") + bar.style("width")
            scales.append(bar.style("width") / ms)
        assert row.one(cls="waterfall-total").text() == fmt_ms(latency["voice_to_voice_ms"])
    # One common millisecond scale for every turn.
    assert max(scales) == pytest.approx(min(scales), rel=1e-3)
    # The slowest turn fits within the axis.
    assert 2463.0 * scales[0] <= 100.0
    # Components outside the chain are shown beside it.
    assert "LLM first sentence 455 ms" in rows[0].text()
    assert "first frame 12 ms" in rows[0].text()


def test_header(rendered: Rendered) -> None:
    header = rendered.dom.one(id="call-header")

    def field_text(name: str) -> str:
        return header.one("dd", data_field=name).text()

    assert field_text("route") == "support"
    assert field_text("agent") == "Support Agent"
    assert field_text("caller") == "sip:+4722334455@127.0.0.1"
    assert field_text("duration") == "0:33"
    assert field_text("end-reason") == "bye (by caller)"
    assert field_text("call-id") == "a84b4c76e66710@127.0.0.1"
    assert CALL in header.text()


def test_barge_ins_listed(rendered: Rendered) -> None:
    items = rendered.dom.one(id="barge-ins").all("li", "barge-in")
    assert len(items) == 2
    real, false = items
    assert real.attrs["data-false"] == "false"
    assert "false-barge-in" not in real.classes
    assert real.one(cls="stop-ms").text() == "182 ms"
    assert "Let me check. Your order" in real.one(cls="heard").text()
    assert real.one(cls="unheard").text() == " shipped on Monday and should arrive by Thursday."
    assert false.attrs["data-false"] == "true"
    assert "false-barge-in" in false.classes
    assert "false barge-in" in false.one(cls="false-marker").text()
    assert not false.all(cls="stop-ms")


def test_errors_listed(rendered: Rendered) -> None:
    items = rendered.dom.one(id="errors").all("li", "error-item")
    got = [
        (
            i.one(cls="error-kind").text(),
            i.one(cls="error-stage").text(),
            i.one(cls="error-recovery").text(),
        )
        for i in items
    ]
    assert got == [
        ("llm_timeout", "stage: llm", "recovery: retry"),
        ("tts_failed", "stage: tts", "recovery: fallback_voice"),
    ]
    assert items[1].one(cls="error-text").text() == "espeak-ng exited with status 1 & <no audio>"


def test_timeline(rendered: Rendered) -> None:
    rows = rendered.dom.one(id="timeline-table").all("tr", "event")
    assert [int(r.attrs["data-seq"]) for r in rows] == list(range(1, 16))
    kinds = [r.attrs["data-kind"] for r in rows]
    assert kinds.count("turn") == 4 and kinds.count("sip") == 3
    by_seq = {int(r.attrs["data-seq"]): r for r in rows}
    assert "incoming" in by_seq[1].text()
    assert "check_order" in by_seq[6].text() and "A-4711" in by_seq[6].text()
    assert "42 ms" in by_seq[6].text()
    assert "4711" in by_seq[5].text()  # unknown kinds: compact JSON of their data
    assert "Hi, I'd like to check on my order." in by_seq[4].text()
    assert "+6.20 s" in by_seq[4].text()


def test_record_text_is_escaped(rendered: Rendered) -> None:
    dom = rendered.dom
    # Exactly the page's own script, and no element made from the record.
    assert len(dom.all("script")) == 1
    assert "alert(1)" not in "".join(s.text() for s in dom.all("script"))
    assert not dom.all("img")
    assert dom.one("title").text() != "pwned"
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in rendered.html
    caller = [n.text() for n in dom.all(cls="caller-text")]
    assert XSS_CALLER in caller
    assert any(XSS_ASSISTANT in n.text() for n in dom.all(cls="assistant-text"))


def test_screenshot_artifact(rendered: Rendered) -> None:
    assert rendered.screenshot.is_file()
    data = rendered.screenshot.read_bytes()
    assert data.startswith(b"\x89PNG\r\n\x1a\n")
    assert len(data) > 10_000, len(data)
    folder = Path(os.environ.get("TEST_ARTIFACTS") or REPO_ROOT / "test-artifacts")
    assert (folder / "calls_page.png").read_bytes() == data


def test_list_view(tmp_path: Path) -> None:
    binary = require_binary("chromium")

    async def main() -> str:
        # A token a header cannot carry: the page passes it on in the query string.
        async with serving(call_source(), token="tok en/+") as (_, base):
            url = f"{base}/calls.html?token={quote('tok en/+', safe='')}"
            out = await run_chromium(
                chromium_command(binary, tmp_path / "profile", "--dump-dom", url), tmp_path
            )
            return out.decode("utf-8")

    dom = parse_dom(asyncio.run(asyncio.wait_for(main(), 2 * CHROMIUM_TIMEOUT)))
    # The token from the page's URL reached its fetches: both tables are filled.
    live = dom.one("table", id="live-table").all("tr", "call-row")
    recent = dom.one("table", id="recent-table").all("tr", "call-row")
    assert [r.attrs["data-call-id"] for r in live] == ["c-live"]
    assert [r.attrs["data-call-id"] for r in recent] == [CALL]
    assert "bye" in recent[0].text() and "0:33" in recent[0].text()
    assert dom.one(id="ready").text() == "ready"
    assert "failed" not in dom.one(id="status").text()
    (campaign,) = dom.one("table", id="campaigns-table").all("tr", "campaign-row")
    text = campaign.text()
    assert "flu shots" in text and "240 / 500" in text and "busy 30" in text


def test_unknown_call_and_wrong_token(tmp_path: Path) -> None:
    binary = require_binary("chromium")

    async def main() -> tuple[str, str]:
        async with serving(call_source(), token=TOKEN) as (_, base):
            good = quote(TOKEN, safe="")
            missing = await run_chromium(
                chromium_command(
                    binary, tmp_path / "p1", "--dump-dom", f"{base}/?call=nope&token={good}"
                ),
                tmp_path,
            )
            wrong = await run_chromium(
                chromium_command(binary, tmp_path / "p2", "--dump-dom", f"{base}/?token=wrong"),
                tmp_path,
            )
            return missing.decode("utf-8"), wrong.decode("utf-8")

    missing, wrong = asyncio.run(asyncio.wait_for(main(), 2 * CHROMIUM_TIMEOUT))
    header = parse_dom(missing).one(id="call-header")
    assert header.text() == "No such call: nope"
    # The page itself needs the token: the browser shows the 401 answer, no page.
    assert not parse_dom(wrong).all(id="status")
    assert '{"error":"unauthorized"}' in wrong


def test_fixture_is_consistent() -> None:
    detail = realistic_call()
    kinds = [e["kind"] for e in detail["events"]]
    assert kinds.count("turn") == detail["turns"] == len(TURN_LATENCIES)
    assert kinds.count("barge_in") == detail["barge_ins"]
    assert kinds.count("error") == detail["errors"]
    assert copy.deepcopy(detail) == detail
