"""DataMap tools: the SDK's builder shape, and the server's run of them against
a local HTTP server (expressions, webhooks in order, error keys, foreach,
fallback output, variables)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest

from mediaserver import AgentBase, DataMap, SwaigFunctionResult, create_expression_tool
from mediaserver.agent.data_map_exec import DataMapTool, expand
from mediaserver.call.commands import Hangup, Say
from tests.agent.fake_api import FakeApi, Request


def run_tool(agent: AgentBase, name: str, args: dict[str, Any], **raw: Any) -> Any:
    tool = agent.tools[name]
    assert tool.is_async
    return asyncio.run(tool.handler(args, raw))


def weather_api(request: Request) -> tuple[int, Any]:
    """WeatherAPI.com-like: /v1/current.json?q=CITY; unknown city -> 400 {"error": ...}."""
    city = request.query.get("q", "")
    if city == "atlantis":
        return 400, {"error": {"code": 1006, "message": "No matching location found."}}
    return 200, {
        "location": {"name": city.title()},
        "current": {"temp_c": 21.5, "condition": {"text": "Sunny"}},
        "hours": [{"t": "9", "c": 18}, {"t": "12", "c": 21}, {"t": "15", "c": 23}],
    }


@pytest.fixture
def api() -> Iterator[FakeApi]:
    server = FakeApi(weather_api)
    yield server
    server.close()


def test_the_builder_makes_the_sdk_wire_shape() -> None:
    data_map = (
        DataMap("get_weather")
        .purpose("Weather for a city")
        .parameter("city", "string", "The city", required=True)
        .parameter("units", "string", "Units", enum=["c", "f"])
        .webhook("GET", "https://x/v1?q=${args.city}", headers={"K": "v"})
        .output(SwaigFunctionResult("It is ${response.current.temp_c}"))
        .error_keys(["error"])
        .fallback_output(SwaigFunctionResult("No weather."))
    )
    assert data_map.to_swaig_function() == {
        "function": "get_weather",
        "description": "Weather for a city",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string", "description": "The city"},
                "units": {"type": "string", "description": "Units", "enum": ["c", "f"]},
            },
            "required": ["city"],
        },
        "data_map": {
            "webhooks": [
                {
                    "url": "https://x/v1?q=${args.city}",
                    "method": "GET",
                    "headers": {"K": "v"},
                    "output": {"response": "It is ${response.current.temp_c}"},
                    "error_keys": ["error"],
                }
            ],
            "output": {"response": "No weather."},
        },
    }
    with pytest.raises(ValueError, match="add a webhook before output"):
        DataMap("x").output(SwaigFunctionResult("y"))


def test_a_webhook_answer_fills_the_output_and_its_actions(api: FakeApi) -> None:
    agent = AgentBase("A")
    agent.register_swaig_function(
        DataMap("get_weather")
        .purpose("Weather")
        .parameter("city", "string", "The city", required=True)
        .webhook("GET", api.url + "/v1/current.json?q=${lc:args.city}&key=${global_data.key}")
        .output(
            SwaigFunctionResult(
                "${location.name}: ${response.current.condition.text}, ${current.temp_c} C"
            ).say("Checked ${args.city}.")
        )
        .to_swaig_function()
    )
    tool = agent.tools["get_weather"]
    assert tool.spec.parameters["required"] == ["city"]
    result = run_tool(agent, "get_weather", {"city": "New York"}, global_data={"key": "k&1"})
    assert result.response == "New York: Sunny, 21.5 C"
    _, commands = result.to_tool_output()
    assert commands == (Say("Checked New York."),)
    # Values in the URL are percent-encoded; the request is the API's own.
    (request,) = api.requests
    assert request.method == "GET" and request.path == "/v1/current.json"
    assert request.query == {"q": "new york", "key": "k&1"}


def test_failed_webhooks_fall_through_to_the_next_then_the_fallback(api: FakeApi) -> None:
    agent = AgentBase("A")
    agent.register_swaig_function(
        DataMap("get_weather")
        .parameter("city", "string", "The city")
        .webhook("GET", api.url + "/v1/current.json?q=${args.city}")
        .output(SwaigFunctionResult("first ${current.temp_c}"))
        .webhook("GET", "http://127.0.0.1:9/unreachable")
        .output(SwaigFunctionResult("second"))
        .fallback_output(SwaigFunctionResult("No weather for ${args.city}.").hangup())
        .to_swaig_function()
    )
    # 400 with an error body, then a refused connection: the fallback answers.
    result = run_tool(agent, "get_weather", {"city": "atlantis"})
    assert result.response == "No weather for atlantis."
    assert result.to_tool_output()[1] == (Hangup(),)
    assert run_tool(agent, "get_weather", {"city": "paris"}).response == "first 21.5"


def test_error_keys_in_a_2xx_answer_fail_the_webhook() -> None:
    server = FakeApi(lambda r: (200, {"error": "quota exceeded", "current": {}}))
    try:
        tool = DataMapTool(
            "w",
            {
                "webhooks": [{"url": server.url, "method": "GET", "output": {"response": "ok"}}],
                "error_keys": ["error"],
                "output": {"response": "fallback"},
            },
        )
        assert asyncio.run(tool({}, {})).response == "fallback"
    finally:
        server.close()


def test_no_fallback_gives_an_answer_the_model_can_explain() -> None:
    tool = DataMapTool("w", {"webhooks": [{"url": "http://127.0.0.1:9/", "method": "GET"}]})
    answer = asyncio.run(tool({}, {})).response
    assert answer.startswith("The w tool could not get an answer (webhook 1: ")


def test_foreach_formats_an_array_and_post_sends_a_typed_json_body(api: FakeApi) -> None:
    agent = AgentBase("A")
    agent.register_swaig_function(
        DataMap("forecast")
        .parameter("city", "string", "The city")
        .parameter("days", "integer", "Days")
        .webhook("POST", api.url + "/v1/forecast", headers={"X-Key": "${global_data.key}"})
        .body({"q": "${args.city}", "days": "${args.days}", "note": "for ${args.city}"})
        .foreach(
            {
                "input_key": "hours",
                "output_key": "list",
                "max": 2,
                "append": "${this.t}h ${this.c}C; ",
            }
        )
        .output(SwaigFunctionResult("Forecast: ${list}"))
        .to_swaig_function()
    )
    result = run_tool(agent, "forecast", {"city": "Oslo", "days": 2}, global_data={"key": "s"})
    assert result.response == "Forecast: 9h 18C; 12h 21C; "
    (request,) = api.requests
    assert request.method == "POST" and request.headers["x-key"] == "s"
    assert request.json() == {"q": "Oslo", "days": 2, "note": "for Oslo"}


def test_expressions_answer_without_a_request() -> None:
    agent = AgentBase("A")
    tool = create_expression_tool(
        "playback",
        {
            "${args.command}": (r"^(start|play)", SwaigFunctionResult("Playing ${args.file}.")),
        },
        parameters={"command": {"type": "string", "required": True}, "file": {"type": "string"}},
    ).to_swaig_function()
    tool["data_map"]["expressions"].append(
        {
            "string": "${args.command}",
            "pattern": "stop",
            "output": {"response": "Stopped."},
            "nomatch-output": {"response": "I can only start or stop."},
        }
    )
    agent.register_swaig_function(tool)
    assert run_tool(agent, "playback", {"command": "play", "file": "a.wav"}).response == (
        "Playing a.wav."
    )
    assert run_tool(agent, "playback", {"command": "stop"}).response == "Stopped."
    assert run_tool(agent, "playback", {"command": "rewind"}).response == (
        "I can only start or stop."
    )


def test_variables() -> None:
    context = {"args": {"q": "A b"}, "response": {"items": [{"n": 1}, {"n": 2}]}, "flag": True}
    assert expand("${response.items[1].n}", context) == 2  # one variable keeps its type
    assert expand("n=${response.items[1].n} ${missing.x}!", context) == "n=2 !"
    assert expand("%{args.q}|${uc:args.q}|${enc:args.q}|${flag}", context) == ("A b|A B|A%20b|true")
    assert expand("/s?q=${args.q}", context, url=True) == "/s?q=A%20b"
    assert expand({"a": ["${args.q}"]}, context) == {"a": ["A b"]}


def test_register_swaig_function_refuses_what_it_cannot_run() -> None:
    agent = AgentBase("A")
    with pytest.raises(ValueError, match="only DataMap tools"):
        agent.register_swaig_function({"function": "f", "web_hook_url": "https://x/"})
    with pytest.raises(ValueError, match="no 'function' name"):
        agent.register_swaig_function({"data_map": {}})
    agent.register_swaig_function(DataMap("f").to_swaig_function())
    with pytest.raises(ValueError, match="two tools named 'f'"):
        agent.register_swaig_function(DataMap("f").to_swaig_function())
