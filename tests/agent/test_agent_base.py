"""AgentBase as an SDK user writes it: prompt, languages, params, tools, results."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from mediaserver import AgentBase, FunctionResult, SwaigFunctionResult
from mediaserver.agent import AgentServer
from mediaserver.agent.result import coerce_result
from mediaserver.agent.schema import ToolArgumentError
from mediaserver.agent.voices import local_voice


class ShopAgent(AgentBase):
    def __init__(self) -> None:
        super().__init__(name="Shop Agent", route="/shop/main", basic_auth=("u", "p"))
        self.prompt_add_section("Role", body="You sell hats.", bullets=["Be brief", "Be kind"])
        self.prompt_add_section(
            "Steps", numbered=True, numbered_bullets=True, bullets=["Greet", "Help"]
        )
        self.prompt_add_to_section("Role", bullet="Never lie")
        self.prompt_add_subsection("Role", "Tone", body="Warm.")
        self.add_language("English", "en-US", "elevenlabs.rachel", function_fillers=["Hm."])
        self.add_hints(["hat", "cap"])
        self.set_params({"end_of_speech_timeout": 500, "temperature": 0.3, "mystery": 1})
        self.set_global_data({"shop": "north"})

    @AgentBase.tool(name="price", fillers=["Let me look."])
    def price(self, item: str, quantity: int = 1, raw_data: dict | None = None) -> Any:
        """Price of an item.

        Args:
            item: what to price
            quantity: how many
        """
        shop = (raw_data or {}).get("global_data", {}).get("shop")
        return SwaigFunctionResult(f"{quantity} {item} cost 5 dollars at {shop}").say("Sure.")

    @AgentBase.tool()
    def legacy(self, args, raw_data):  # type: ignore[no-untyped-def]
        """The SDK's old handler style."""
        return {"response": f"got {args}", "action": [{"hangup": True}]}


def test_prompt_renders_as_markdown() -> None:
    prompt = ShopAgent().get_prompt()
    assert prompt == (
        "## Role\n\nYou sell hats.\n\n- Be brief\n- Be kind\n- Never lie\n\n### Tone\n\nWarm."
        "\n\n## 2. Steps\n\n1. Greet\n2. Help"
    )
    agent = AgentBase(name="x")
    agent.set_prompt_text("Just this.")
    assert agent.get_prompt() == "Just this."


def test_route_voice_params_and_spec() -> None:
    agent = ShopAgent()
    assert agent.sip_user == "main"
    spec = agent.to_spec()
    assert spec.name == "Shop Agent"
    assert spec.settings.turn.end_of_speech_timeout == 0.5
    assert spec.settings.llm.temperature == 0.3
    assert spec.settings.tts.voice == "en-us+f3"
    assert spec.settings.fillers.phrases == ["Hm."]
    assert spec.hints == ["hat", "cap"]
    assert spec.global_data == {"shop": "north"}
    assert spec.greeting == "Hello, this is Shop Agent. How can I help you?"
    assert [t.spec.name for t in spec.tools] == ["legacy", "price"] or [
        t.spec.name for t in spec.tools
    ] == ["price", "legacy"]
    price = agent.tools["price"]
    assert price.fillers == ["Let me look."]
    assert price.spec.parameters["required"] == ["item"]


@pytest.mark.parametrize(
    ("code", "voice", "engine", "expected"),
    [
        ("en-US", "spore", "rime", "en-us+m3"),
        ("en-GB", "en-GB-Neural2-F", None, "en-gb+f3"),
        ("es-US", "unknown", "azure", "es-419"),
        ("xx-YY", "whatever", None, "en-us"),
    ],
)
def test_cloud_voices_map_to_a_local_voice(
    code: str, voice: str, engine: str | None, expected: str
) -> None:
    assert local_voice(code, voice, engine).voice == expected


def test_typed_tool_is_validated_called_and_coerced() -> None:
    tool = ShopAgent().tools["price"]
    raw = {"global_data": {"shop": "north"}}
    result = tool.handler({"item": "hat", "quantity": "2"}, raw)
    assert result.to_dict() == {
        "response": "2 hat cost 5 dollars at north",
        "action": [{"say": "Sure."}],
    }
    with pytest.raises(ToolArgumentError, match="item: required"):
        tool.handler({"quantity": 2}, raw)


def test_legacy_handler_gets_args_and_raw_data() -> None:
    result = ShopAgent().tools["legacy"].handler({"a": 1}, {"call_id": "c"})
    assert result.to_dict() == {"response": "got {'a': 1}", "action": [{"hangup": True}]}


def test_define_tool_and_async_handlers() -> None:
    agent = AgentBase(name="a")

    async def lookup(city: str) -> str:
        return f"sunny in {city}"

    agent.define_tool("weather", "Weather for a city.", {"city": {"type": "string"}}, lookup)
    tool = agent.tools["weather"]
    assert tool.is_async
    assert tool.spec.parameters == {"type": "object", "properties": {"city": {"type": "string"}}}
    result = asyncio.run(tool.handler({"city": "Oslo"}, {}))
    assert result.response == "sunny in Oslo"
    with pytest.raises(ValueError, match="two tools"):
        agent.define_tool("weather", "again", {}, lookup)


def test_instance_decorator() -> None:
    agent = AgentBase(name="a")

    @agent.tool(name="ping")
    def ping() -> str:
        """Answer pong."""
        return "pong"

    assert agent.tools["ping"].spec.description == "Answer pong."
    assert agent.tools["ping"].handler({}, {}).response == "pong"


def test_result_actions_and_coercion() -> None:
    result = (
        FunctionResult("ok", post_process=True)
        .say("hi")
        .update_global_data({"a": 1})
        .remove_global_data("b")
        .toggle_functions([{"function": "x", "active": False}])
        .set_end_of_speech_timeout(400)
        .send_dtmf("12")
        .hangup()
    )
    assert json.loads(json.dumps(result.to_dict())) == {
        "response": "ok",
        "post_process": True,
        "action": [
            {"say": "hi"},
            {"set_global_data": {"a": 1}},
            {"unset_global_data": ["b"]},
            {"toggle_functions": [{"function": "x", "active": False}]},
            {"end_of_speech_timeout": 400},
            {"send_dtmf": "12"},
            {"hangup": True},
        ],
    }
    assert coerce_result(None).response == ""
    assert coerce_result("text").response == "text"
    assert coerce_result({"a": 1}).response == '{"a": 1}'
    assert coerce_result(7).response == "7"


def test_two_agents_on_one_route_is_an_error() -> None:
    server = AgentServer()
    server.register(ShopAgent())
    with pytest.raises(ValueError, match="route /main"):
        server.register(ShopAgent())
    server.register(AgentBase(name="Other", route="/other"))
    config = server.config()
    assert config.routes["main"].app == "agent" and config.routes["other"].app == "agent"
    assert set(server.specs(config)) == {"main", "other"}


def test_barge_and_keypad_params_map_onto_the_pipeline() -> None:
    agent = AgentBase(name="x")
    agent.set_params(
        {
            "barge_match_string": "stop|cancel",
            "interrupt_on_noise": True,
            "transparent_barge": False,
            "transparent_barge_max_time": 1500,
            "acknowledge_interruptions": 2,
            "digit_timeout": 5000,
            "digit_terminators": "*#",
        }
    )
    settings = agent.pipeline_settings()
    barge = settings.barge_in
    assert (barge.match, barge.interrupt_on_noise, barge.transparent) == ("stop|cancel", 1.0, False)
    assert (barge.transparent_max_time, barge.acknowledge) == (1.5, 2)
    assert (settings.dtmf.digit_timeout, settings.dtmf.terminators) == (5.0, "*#")
    assert settings.turn.detector == "smart_turn"
    agent.set_params({"turn_detection": False, "turn_detection_timeout": 2500})
    turn = agent.pipeline_settings().turn
    assert (turn.detector, turn.smart_turn.max_wait) == ("silence", 2.5)
    # interrupt_on_noise as a number: seconds, or milliseconds from 100 up.
    assert (
        agent.set_param("interrupt_on_noise", 2).pipeline_settings().barge_in.interrupt_on_noise
        == 2
    )
    assert (
        agent.set_param("interrupt_on_noise", 1500).pipeline_settings().barge_in.interrupt_on_noise
        == 1.5
    )
    assert (
        agent.set_param("acknowledge_interruptions", "true")
        .pipeline_settings()
        .barge_in.acknowledge
        > 100
    )
    assert (
        agent.set_param("acknowledge_interruptions", False).pipeline_settings().barge_in.acknowledge
        == 0
    )


def test_a_tool_can_ask_for_keypad_digits() -> None:
    from mediaserver.agent.actions import to_command
    from mediaserver.call import commands as cmd

    result = SwaigFunctionResult("Please enter your PIN.").collect_digits(4, "#", 8000)
    (action,) = result.to_dict()["action"]
    assert to_command(action) == cmd.CollectDigits(4, "#", 8.0)


def test_pronunciations_reach_the_voice() -> None:
    agent = AgentBase("A").add_pronunciation("SQL", "sequel", ignore_case=True)
    (rule,) = agent.to_spec().settings.tts.pronunciations
    assert (rule.replace, rule.with_text, rule.ignore_case) == ("SQL", "sequel", True)
    agent.set_pronunciations([{"replace": "AI", "with": "A I"}])
    (rule,) = agent.to_spec().settings.tts.pronunciations
    assert (rule.replace, rule.with_text, rule.ignore_case) == ("AI", "A I", False)


def test_sdk_names_not_built_here_fail_naming_themselves() -> None:
    agent = AgentBase("A")
    with pytest.raises(NotImplementedError, match=r"AgentBase.set_native_functions \(SignalWire"):
        agent.set_native_functions(["check_time"])
    with pytest.raises(NotImplementedError, match=r"SwaigFunctionResult.send_sms"):
        SwaigFunctionResult("x").send_sms(to_number="+1555", from_number="+1555", body="hi")
    with pytest.raises(AttributeError, match="no_such_method"):
        agent.no_such_method()  # type: ignore[attr-defined]
    # Web-hosting options are accepted (logged once) and chain.
    assert agent.setup_graceful_shutdown().enable_debug_routes() is agent
    assert agent.get_name() == "A" and agent.get_post_prompt() is None


def test_the_dynamic_config_callback_changes_a_copy_per_call() -> None:
    seen: list[tuple[dict[str, Any], dict[str, Any], dict[str, Any]]] = []

    def per_call(
        query: dict[str, Any], body: dict[str, Any], headers: dict[str, Any], agent: AgentBase
    ) -> None:
        seen.append((query, body, headers))
        agent.prompt_add_section("Tenant", body=headers["X-Tenant"])
        agent.set_params({"static_greeting": "Hi tenant."}).update_global_data({"t": 1})

    agent = AgentBase("A").set_global_data({"base": True}).set_dynamic_config_callback(per_call)
    spec = agent.to_spec()
    assert spec.configure is not None
    info = {
        "caller_id_num": "alice",
        "called": "a",
        "caller_id_name": "",
        "headers": {"X-Tenant": "acme"},
    }
    call_spec = spec.configure(info)
    assert call_spec.greeting == "Hi tenant." and "## Tenant\n\nacme" in call_spec.system_prompt
    assert call_spec.global_data == {"base": True, "t": 1} and call_spec.configure is None
    assert seen == [
        (
            {},
            {
                "call": {
                    "from": "alice",
                    "to": "a",
                    "caller_id_name": "",
                    "trunk": None,
                    "headers": {"X-Tenant": "acme"},
                }
            },
            {"X-Tenant": "acme"},
        )
    ]
    # The agent itself is as it was.
    again = agent.to_spec()
    assert "Tenant" not in again.system_prompt and again.global_data == {"base": True}
