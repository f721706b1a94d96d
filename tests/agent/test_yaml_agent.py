"""YAML agents: the same agent as the Python program, tools of every kind, clear errors."""

from __future__ import annotations

import asyncio
import http.server
import json
import runpy
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from unittest import mock

import pytest

from mediaserver.agent.yaml_agent import load_agent
from mediaserver.config import ConfigError
from tests.agent.fake_api import FakeApi
from tests.peers import REPO_ROOT

EXAMPLES = REPO_ROOT / "examples"


def test_yaml_support_agent_is_the_python_one() -> None:
    with mock.patch("mediaserver.agent.base.AgentBase.run"):
        python_agent = runpy.run_path(str(EXAMPLES / "support_agent.py"))["agent"]
    yaml_agent = load_agent(EXAMPLES / "support_agent.yaml")
    a, b = python_agent.to_spec(), yaml_agent.to_spec()
    assert (a.name, a.system_prompt, a.greeting, a.hints) == (
        b.name,
        b.system_prompt,
        b.greeting,
        b.hints,
    )
    assert [t.spec for t in a.tools] == [t.spec for t in b.tools]
    assert a.settings == b.settings
    assert yaml_agent.sip_user == python_agent.sip_user == "support"
    args = {"order_id": "42"}
    assert a.tools[0].handler(args, {}).response == b.tools[0].handler(args, {}).response


@pytest.mark.parametrize(
    ("text", "where"),
    [
        (
            "name: A\ntools:\n  - name: t\n    parameter: {}\n    response: x\n",
            ":4: tools.0.parameter",
        ),
        ("name: A\nparams: [1, 2]\n", ":2: params"),
        ("name: A\ntools:\n  - name: t\n", ":3: tools.0: a tool needs"),
        ("name: A\nlanguages:\n  - {name: E, code: en-US}\n", ":3: languages.0.voice"),
        ("route: /x\n", ":1: name"),
        ("name: [unclosed\n", ":2: not valid YAML"),
        ("name: A\ntools:\n  - {name: t, function: 'nowhere:f'}\n", "tools.0.function"),
    ],
)
def test_mistakes_name_the_line_and_key(tmp_path: Path, text: str, where: str) -> None:
    path = tmp_path / "agent.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_agent(path)
    message = str(info.value)
    assert where in message and "\n" not in message, message


def test_cli_reports_a_typo_in_one_line(tmp_path: Path) -> None:
    path = tmp_path / "agent.yaml"
    path.write_text("name: A\nroute: /a\nhints: hello\n")
    proc = subprocess.run(
        [sys.executable, "-m", "mediaserver", "run", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO_ROOT,
    )
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "agent.yaml:3: hints" in lines[0], proc.stderr


def test_function_tool(tmp_path: Path) -> None:
    path = tmp_path / "agent.yaml"
    path.write_text(
        "name: A\ntools:\n  - name: status\n    parameters: {order_id: {type: string}}\n"
        "    function: tests.agent.yaml_tools:order_status\n"
    )
    tool = load_agent(path).tools["status"]
    assert tool.handler({"order_id": "7"}, {}).response == "Order 7 is packed."


def test_async_function_tool_is_awaited(tmp_path: Path) -> None:
    path = tmp_path / "agent.yaml"
    path.write_text(
        "name: A\ntools:\n  - name: status\n    parameters: {order_id: {type: string}}\n"
        "    function: tests.agent.yaml_tools:order_status_async\n"
    )
    (tool,) = load_agent(path).to_spec().tools
    assert tool.is_async
    result = asyncio.run(tool.handler({"order_id": "7"}, {}))
    assert result.response == "Order 7 is on its way."


@pytest.fixture
def orders_api() -> Iterator[str]:
    """A local JSON web service: GET /orders/<id> -> {"status": ..., "eta": ...}."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            order = self.path.rsplit("/", 1)[-1]
            body = json.dumps({"status": "shipped", "eta": f"day {order}"}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def test_http_data_tool(tmp_path: Path, orders_api: str) -> None:
    path = tmp_path / "agent.yaml"
    path.write_text(
        "name: A\ntools:\n  - name: status\n"
        "    parameters: {order_id: {type: string}}\n    required: [order_id]\n"
        f"    http: {{url: '{orders_api}/orders/{{order_id}}'}}\n"
        "    response: 'Order {order_id} is {status}, arriving {eta}.'\n"
    )
    tool = load_agent(path).tools["status"]
    result = tool.handler({"order_id": "4 2"}, {})
    assert result.response == "Order 4 2 is shipped, arriving day 4%202."


def test_skills_and_data_map_tools_in_yaml(tmp_path: Path) -> None:
    """The YAML form carries skills and DataMap tools as the Python form does."""
    api = FakeApi(lambda r: (200, {"status": "shipped", "items": [{"n": "a"}, {"n": "b"}]}))
    try:
        path = tmp_path / "agent.yaml"
        path.write_text(
            "name: A\n"
            "skills: [datetime, {name: math}]\n"
            "tools:\n"
            "  - name: status\n"
            "    description: Order status\n"
            "    parameters: {order_id: {type: string}}\n"
            "    required: [order_id]\n"
            "    data_map:\n"
            "      webhooks:\n"
            f"        - url: '{api.url}/orders/${{args.order_id}}'\n"
            "          method: GET\n"
            "          foreach: {input_key: items, output_key: names, append: '${this.n} '}\n"
            "          output: {response: 'Order ${args.order_id} is ${status}: ${names}'}\n"
        )
        agent = load_agent(path)
        assert {"get_current_time", "calculate", "status"} <= set(agent.tools)
        tool = agent.tools["status"]
        assert tool.spec.parameters["required"] == ["order_id"]
        result = asyncio.run(tool.handler({"order_id": "42"}, {}))
        assert result.response == "Order 42 is shipped: a b "
        assert api.requests[0].path == "/orders/42"
    finally:
        api.close()


@pytest.mark.parametrize(
    ("yaml_text", "message"),
    [
        ("name: A\nskills: [teleport]\n", "agent.yaml: skills.0: unknown skill 'teleport'"),
        ("name: A\ncontexts: {main: {steps: [{name: a}]}}\n", "contexts: When using a single"),
        ("name: A\nskills: [{name: joke}]\n", "skills.0: skill 'joke' needs the parameter"),
        (
            "name: A\ntools:\n  - name: t\n    response: x\n    data_map: {}\n",
            "agent.yaml:3: tools.0: a tool needs exactly one of",
        ),
    ],
)
def test_a_bad_skill_or_data_map_tool_is_one_line_naming_the_key(
    tmp_path: Path, yaml_text: str, message: str
) -> None:
    path = tmp_path / "agent.yaml"
    path.write_text(yaml_text)
    with pytest.raises(ConfigError) as info:
        load_agent(path)
    assert message in str(info.value) and "\n" not in str(info.value)


def test_contexts_in_yaml(tmp_path: Path) -> None:
    path = tmp_path / "agent.yaml"
    path.write_text(
        "name: A\n"
        "contexts:\n"
        "  default:\n"
        "    steps:\n"
        "      - name: ask\n"
        "        text: Ask for the name.\n"
        "        gather_info:\n"
        "          output_key: caller\n"
        "          questions: [{key: name, question: 'What is your name?'}]\n"
        "      - {name: help, text: Help., functions: [status]}\n"
        "tools:\n"
        "  - {name: status, response: ok}\n"
    )
    spec = load_agent(path).to_spec()
    assert spec.contexts is not None
    assert [s["name"] for s in spec.contexts["default"]["steps"]] == ["ask", "help"]
    assert spec.greeting is not None and spec.greeting.endswith("What is your name?")
