"""Skills: the registry, the SDK's interface, and each built-in skill against a
local server speaking its real API's format (no network)."""

from __future__ import annotations

import asyncio
import re
from typing import Any, ClassVar

import pytest

from mediaserver import AgentBase, SkillBase, SwaigFunctionResult
from mediaserver.agent.skills import SkillError, skill_class
from mediaserver.agent.skills.math_skill import evaluate
from tests.agent.fake_api import FakeApi, Request


def call(agent: AgentBase, name: str, args: dict[str, Any]) -> str:
    tool = agent.tools[name]
    if tool.is_async:
        result = asyncio.run(tool.handler(args, {}))
    else:
        result = tool.handler(args, {})
    assert isinstance(result, SwaigFunctionResult)
    return result.response


def test_datetime_skill_tells_time_and_date_in_a_zone() -> None:
    agent = AgentBase("A").add_skill("datetime")
    assert set(agent.tools) == {"get_current_time", "get_current_date"}
    assert re.fullmatch(
        r"The current time is \d\d:\d\d:\d\d [AP]M UTC", call(agent, "get_current_time", {})
    )
    assert call(agent, "get_current_time", {"timezone": "Asia/Tokyo"}).endswith("JST")
    # Callers say a city, not a zone name.
    assert call(agent, "get_current_time", {"timezone": "Tokyo"}).endswith("JST")
    assert call(agent, "get_current_time", {"timezone": "new york"})[-3:] in ("EST", "EDT")
    assert call(agent, "get_current_date", {"timezone": "Europe/Paris"}).startswith(
        "Today's date is "
    )
    assert "unknown time zone 'Mars/Base'" in call(
        agent, "get_current_time", {"timezone": "Mars/Base"}
    )
    assert "Date and Time Information" in agent.get_prompt()


@pytest.mark.parametrize(
    ("expression", "value"),
    [
        ("2 + 3 * 4", 14),
        ("(10 + 5) / 3", 5),
        ("12 times 7", 84),
        ("what is 2 to the power of 10?", 1024),
        ("7 squared minus 1", 48),
        ("100 divided by 8", 12.5),
        ("17 mod 5", 2),
        ("-3 ** 2", -9),
        ("1,000 plus 1", 1001),
    ],
)
def test_math_evaluates_arithmetic_said_or_written(expression: str, value: float) -> None:
    assert evaluate(expression) == value


@pytest.mark.parametrize(
    ("expression", "why"),
    [
        ("__import__('os').system('x')", "only numbers"),
        ("9 ** 9 ** 9", "exponent is too large"),
        ("10 ** 99 * 10 ** 99", "too large"),
        ("1 / 0", "division by zero"),
        ("2 +", "not an arithmetic expression"),
        ("x" * 300, "too long"),
        ("(-8) ** 0.5", "not a real number"),
    ],
)
def test_math_refuses_what_is_not_safe_arithmetic(expression: str, why: str) -> None:
    with pytest.raises(ValueError, match=why):
        evaluate(expression)


def test_math_skill_answers_and_explains_an_error() -> None:
    agent = AgentBase("A").add_skill("math")
    # Said as it stands: words, not symbols.
    assert call(agent, "calculate", {"expression": "12 times 7"}) == "12 times 7 is 84"
    assert call(agent, "calculate", {"expression": "(2+3)**2 - 5"}) == (
        "(2 plus 3) to the power of 2 minus 5 is 20"
    )
    assert call(agent, "calculate", {"expression": "1/0"}).startswith(
        "Error: I could not calculate that"
    )


def api_ninjas(request: Request) -> tuple[int, Any]:
    if request.headers.get("x-api-key") != "k":
        return 400, {"error": "Invalid API Key."}
    return 200, [{"joke": f"A {request.path.rsplit('/', 1)[-1]} joke."}]


def test_joke_skill_is_a_data_map_tool_on_api_ninjas_format() -> None:
    server = FakeApi(api_ninjas)
    try:
        agent = AgentBase("A").add_skill("joke", {"api_key": "k", "base_url": server.url})
        assert call(agent, "get_joke", {"type": "dadjokes"}) == "Here's a joke: A dadjokes joke."
        assert server.requests[0].path == "/v1/dadjokes"
        bad = AgentBase("B").add_skill("joke", {"api_key": "wrong", "base_url": server.url})
        assert "problem with the joke service" in call(bad, "get_joke", {"type": "jokes"})
    finally:
        server.close()


def weatherapi(request: Request) -> tuple[int, Any]:
    if request.query.get("q") == "nowhere":
        return 400, {"error": {"code": 1006, "message": "No matching location found."}}
    return 200, {
        "location": {"name": request.query["q"].title()},
        "current": {
            "temp_f": 70.2, "temp_c": 21.2, "feelslike_f": 69.0, "feelslike_c": 20.6,
            "condition": {"text": "Partly cloudy"}, "wind_dir": "NW", "wind_mph": 5.6,
            "wind_kph": 9.0, "cloud": 25,
        },
    }  # fmt: skip


def test_weather_api_skill_reads_weatherapi_com_answers() -> None:
    server = FakeApi(weatherapi)
    try:
        agent = AgentBase("A").add_skill(
            "weather_api", {"api_key": "k", "base_url": server.url, "temperature_unit": "celsius"}
        )
        said = call(agent, "get_weather", {"location": "San Francisco"})
        assert said == (
            "Weather in San Francisco: Partly cloudy, 21.2 degrees Celsius, feels like 20.6. "
            "Wind NW at 9.0 kilometres per hour, cloud cover 25 percent."
        )
        assert server.requests[0].query == {"key": "k", "q": "san francisco", "aqi": "no"}
        assert "cannot get weather information" in call(
            agent, "get_weather", {"location": "Nowhere"}
        )
    finally:
        server.close()


def mediawiki(request: Request) -> tuple[int, Any]:
    q = request.query
    if q.get("list") == "search":
        hits = [] if q["srsearch"] == "zzzz" else [{"title": "Ada Lovelace"}, {"title": "Ada"}]
        return 200, {"query": {"search": hits[: int(q["srlimit"])]}}
    return 200, {
        "query": {"pages": {"7": {"title": q["titles"], "extract": f"{q['titles']} was..."}}}
    }


def test_wikipedia_skill_searches_then_reads_the_introductions() -> None:
    server = FakeApi(mediawiki)
    try:
        agent = AgentBase("A").add_skill(
            "wikipedia_search", {"base_url": server.url, "num_results": 2}
        )
        said = call(agent, "search_wiki", {"query": "Ada Lovelace"})
        assert "**Ada Lovelace**\n\nAda Lovelace was..." in said and "**Ada**" in said
        assert all(r.path == "/w/api.php" for r in server.requests)
        assert "couldn't find any Wikipedia articles for 'zzzz'" in call(
            agent, "search_wiki", {"query": "zzzz"}
        )
    finally:
        server.close()


def custom_search(request: Request) -> tuple[int, Any]:
    if request.query.get("key") != "k":
        return 400, {"error": {"code": 400, "message": "API key not valid."}}
    items = [{"title": f"T{n}", "link": f"https://e/{n}", "snippet": f"S{n}"} for n in range(5)]
    return 200, {"items": items[: int(request.query["num"])]}


def test_web_search_skill_uses_google_programmable_search() -> None:
    server = FakeApi(custom_search)
    try:
        params = {
            "api_key": "k",
            "search_engine_id": "cx1",
            "base_url": server.url,
            "num_results": 2,
        }
        agent = AgentBase("A").add_skill("web_search", params)
        said = call(agent, "web_search", {"query": "voice agents"})
        assert said == (
            "I found 2 results for 'voice agents':\n1. T0 (https://e/0): S0\n2. T1 (https://e/1): S1"
        )
        assert server.requests[0].query == {
            "key": "k",
            "cx": "cx1",
            "q": "voice agents",
            "num": "2",
        }
        # Two instances under different tool names.
        agent.add_skill("web_search", {**params, "tool_name": "news_search", "api_key": "bad"})
        assert (
            call(agent, "news_search", {"query": "x"}) == "Error searching the web: HTTPStatusError"
        )
    finally:
        server.close()


@pytest.mark.parametrize(
    ("name", "params", "message"),
    [
        ("joke", {}, "needs the parameter\\(s\\) api_key"),
        ("web_search", {"api_key": "k"}, "search_engine_id"),
        ("weather_api", {"api_key": "k", "temperature_unit": "kelvin"}, "fahrenheit or celsius"),
        ("teleport", {}, "unknown skill 'teleport'"),
        ("os:path", {}, "is not a SkillBase"),
        ("nosuchmodule:Skill", {}, "cannot load"),
    ],
)
def test_a_skill_that_cannot_work_is_a_clear_error(
    name: str, params: dict[str, Any], message: str
) -> None:
    with pytest.raises(SkillError, match=message):
        AgentBase("A").add_skill(name, params)


class Greeter(SkillBase):
    """A user skill by module path, with everything a skill can add."""

    SKILL_NAME = "greeter"
    SKILL_DESCRIPTION = "Greets"
    REQUIRED_ENV_VARS: ClassVar[list[str]] = ["GREETER_TEST_VAR"]

    def setup(self) -> bool:
        return True

    def register_tools(self) -> None:
        self.define_tool(
            name="greet",
            description="Greet someone",
            parameters={"name": {"type": "string"}},
            handler=lambda args, raw_data: self.update_skill_data(
                SwaigFunctionResult(f"Hello {args['name']}"), {"greeted": args["name"]}
            ),
        )

    def get_hints(self) -> list[str]:
        return ["hello"]

    def get_global_data(self) -> dict[str, Any]:
        return {"greeter": True}

    def _get_prompt_sections(self) -> list[dict[str, Any]]:
        return [{"title": "Greeting", "body": "Greet people.", "bullets": ["Be warm"]}]


def test_a_user_skill_by_module_path_adds_tools_hints_data_and_prompt(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    path = f"{__name__}:Greeter"
    with pytest.raises(SkillError, match="environment variables"):
        AgentBase("A").add_skill(path)
    monkeypatch.setenv("GREETER_TEST_VAR", "1")
    agent = AgentBase("A").add_skill(path, {"swaig_fields": {"fillers": ["One moment"]}})
    assert skill_class(path) is Greeter
    assert agent.has_skill("greeter") and agent.list_skills() == ["greeter"]
    spec = agent.to_spec()
    assert "hello" in spec.hints and spec.global_data["greeter"] is True
    assert "## Greeting" in spec.system_prompt
    assert agent.tools["greet"].fillers == ["One moment"]
    result = agent.tools["greet"].handler({"name": "Ann"}, {})
    assert result.to_dict()["action"] == [
        {"set_global_data": {"skill:greeter": {"greeted": "Ann"}}}
    ]
    with pytest.raises(SkillError, match="already added"):
        agent.add_skill(path)
    agent.remove_skill("greeter")
    assert "greet" not in agent.tools and "## Greeting" not in agent.get_prompt()
    assert not agent.has_skill("greeter")
