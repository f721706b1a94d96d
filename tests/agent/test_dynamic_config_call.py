"""examples/multi_tenant_agent.py: one agent, a configuration per call.

baresip calls as two tenants (its SIP user) and as a stranger; each tenant
hears its own greeting, and its tool answers from its own data; the
stranger's callback fails, so that call gets the agent as written (recorded,
the call goes on).
"""

from __future__ import annotations

import re
from pathlib import Path

import httpx
import numpy as np

from tests.peers import REPO_ROOT, read_wav_mono, speech_wav, write_wav


def test_each_tenant_gets_its_own_agent(agent_program, baresip, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    server = agent_program(REPO_ROOT / "examples" / "multi_tenant_agent.py")
    question = read_wav_mono(speech_wav("what are your opening hours", tmp_path / "speech"))[0]
    source = write_wav(
        tmp_path / "caller.wav",
        np.concatenate([np.zeros(8000 * 5, np.int16), question, np.zeros(8000 * 6, np.int16)]),
    )
    for user in ("acme", "globex", "stranger"):
        result = baresip(
            server.uri("front"),
            seconds=20,
            source_wav=source,
            account=f"<sip:{user}@127.0.0.1>;regint=0",
        )
        assert result.established, result.describe()
    server.wait_log("record_written", count=3, timeout=15)
    said = [line for line in server.log_text().splitlines() if "agent_said" in line]
    text = "\n".join(said)
    assert "Thank you for calling Acme Rockets." in text, server.log_tail()
    assert "We are open nine to five." in text, server.log_tail()
    assert "Thank you for calling Globex." in text and "We are open eight to eight." in text
    # The stranger: the callback raised; the agent as written answered.
    assert "Hello, how can I help you?" in text and "We are open every day." in text
    port = int(re.findall(r"admin_listening .*port=(\d+)", server.log_text())[0])
    calls = httpx.get(f"http://127.0.0.1:{port}/calls", timeout=5).json()["recent"]
    outcomes = []
    for call in calls:
        events = httpx.get(f"http://127.0.0.1:{port}/calls/{call['id']}", timeout=5).json()
        outcomes += [e["data"] for e in events["events"] if e["kind"] == "dynamic_config"]
    assert sorted(o["ok"] for o in outcomes) == [False, True, True], outcomes
    (failed,) = [o for o in outcomes if not o["ok"]]
    assert "unknown tenant 'stranger'" in failed["error"]
