"""What the agent and the caller have said, and the call data tools work on.

`Conversation` holds the chat history the model sees (system prompt, caller
turns, what the agent was *heard* to say, tool calls and results) and the
per-call data of SignalWire agents: global data, metadata, the tools turned
off, whether the agent stopped answering. The actor owns it; the commands of
a tool result that only change this data are carried out here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from mediaserver.call import commands as cmd
from mediaserver.call.digits import DigitCollector, DigitRequest
from mediaserver.call.flow import Flow
from mediaserver.call.spec import AgentSpec
from mediaserver.pipeline.llm.base import Message, ToolCall, ToolSpec

__all__ = ["Conversation"]


@dataclass
class Conversation:
    """One call's history and data (see the module docstring)."""

    agent: AgentSpec
    messages: list[Message] = field(default_factory=list)
    #: Call data tools can read and change (SignalWire's global_data).
    global_data: dict[str, Any] = field(default_factory=dict)
    metadata: dict[str, Any] = field(default_factory=dict)
    disabled_tools: set[str] = field(default_factory=set)
    #: A tool stopped the agent: the caller's words are kept, not answered.
    stopped: bool = False
    #: Caller words not yet given to the model (said over the agent, or
    #: simulated by a tool), put before the caller's next words.
    pending_user: str = ""
    #: DTMF digits, in order.
    digits: list[str] = field(default_factory=list)
    #: Keypad input for the model (the actor sets it up with the call's settings).
    keypad: DigitCollector | None = None
    #: Where the call is in the agent's contexts and steps (None: it has none).
    flow: Flow | None = None

    @classmethod
    def start(cls, agent: AgentSpec) -> Conversation:
        """A new call's conversation: the system prompt and the agent's global data."""
        flow = (
            Flow(agent.contexts, agent.system_prompt, agent.greeting or "")
            if agent.contexts
            else None
        )
        prompt = flow.system_prompt() if flow else agent.system_prompt
        return cls(agent, [Message("system", prompt)], dict(agent.global_data), flow=flow)

    def tools(self) -> list[ToolSpec]:
        """The tools the model may call now (the current step's, in a flow)."""
        flow = self.flow
        specs = [
            t.spec
            for t in self.agent.tools
            if t.spec.name not in self.disabled_tools and (flow is None or flow.allows(t.spec.name))
        ]
        return specs + (flow.builtin_specs() if flow else [])

    def move(self, command: cmd.ChangeStep | cmd.ChangeContext) -> str:
        """Carry out a move in the flow; the answer for the model (a refusal says why)."""
        if self.flow is None:
            return "This agent has no contexts or steps."
        if isinstance(command, cmd.ChangeStep):
            answer = self.flow.go_step(command.step)
        else:
            answer = self.flow.go_context(command.context)
        self.move_done()
        return answer

    def move_done(self) -> None:
        """The flow moved: the model's instructions are the new step's from now on."""
        if self.flow is not None:
            self.messages[0] = Message("system", self.flow.system_prompt())

    def gathered(self, key: str, value: Any, into: str | None) -> None:
        """A gather step's answer, into global data (under `into` when given; a
        list there collects ``{"key_name", "answer"}`` entries, as the SDK's
        InfoGatherer keeps them)."""
        target = self.global_data.setdefault(into, {}) if into else self.global_data
        if isinstance(target, list):
            target.append({"key_name": key, "answer": value})
        else:
            target[key] = value

    def tool_data(self) -> dict[str, Any]:
        """A copy of the data a tool handler sees."""
        return {"global_data": dict(self.global_data), "meta_data": dict(self.metadata)}

    def caller(self, text: str) -> None:
        """The caller said `text`."""
        self.messages.append(Message("user", text))

    def agent_said(self, text: str) -> None:
        """The caller heard the agent say `text` (nothing when it is blank)."""
        if text.strip():
            self.messages.append(Message("assistant", text))

    def note(self, text: str) -> None:
        """Tell the model something about the call (a system message)."""
        self.messages.append(Message("system", text))

    def take_back_caller(self) -> None:
        """The caller goes on talking before the answer: their last words wait
        for the rest (the model will see them together)."""
        if self.messages[-1].role == "user":
            self.pending_user = (self.messages.pop().content or "") + " "

    def take_back_draft(self, text: str) -> None:
        """A preemptive answer was dropped: the words it answered are not said yet."""
        last = self.messages[-1]
        if last.role == "user" and last.content == text:
            self.messages.pop()

    def take_pending(self, said: str) -> str:
        """Waiting caller words followed by `said` (and nothing waits any more)."""
        text = (self.pending_user + said).strip()
        self.pending_user = ""
        return text

    def tool_names(self, call_ids: set[str] | dict[str, Any]) -> list[str]:
        """The names of the tool calls with these ids, in the order they were made."""
        return [c.name for m in self.messages for c in m.tool_calls if c.id in call_ids]

    def tool_calls(self, text: str | None, calls: list[ToolCall]) -> None:
        """The model asked for `calls` (after saying `text`)."""
        self.messages.append(Message("assistant", text or None, tool_calls=calls))

    def tool_result(self, call: ToolCall, content: str) -> None:
        """A tool's answer, for the model's next step."""
        self.messages.append(Message("tool", content, tool_call_id=call.id, name=call.name))

    def tool_outcome(self, text: str) -> None:
        """What came of the last tool's action (a transfer's outcome), added to that
        tool's answer; a system note when no tool asked."""
        for message in reversed(self.messages):
            if message.role == "tool":
                message.content = f"{message.content or ''} ({text})".strip()
                return
        self.note(text)

    def apply(self, command: cmd.Command) -> bool:
        """Carry out a command that only changes the data; False for any other."""
        match command:
            case cmd.StopListening():
                self.stopped = True
            case cmd.ToggleTools(toggles):
                for name, active in toggles:
                    if active:
                        self.disabled_tools.discard(name)
                    else:
                        self.disabled_tools.add(name)
            case cmd.SetGlobalData(data):
                self.global_data.update(data)
            case cmd.UnsetGlobalData(keys):
                for key in keys:
                    self.global_data.pop(key, None)
            case cmd.SetMetadata(data):
                self.metadata.update(data)
            case cmd.CollectDigits(max_digits, terminators, timeout):
                if self.keypad is not None:
                    self.keypad.request(DigitRequest(max_digits, terminators, timeout))
            case cmd.UserInput(text):
                self.pending_user = f"{text} "
            case cmd.WaitForUser():
                pass  # the agent waits for the caller after every reply anyway
            case cmd.ChangeStep() | cmd.ChangeContext():
                self.move(command)
            case _:
                return False
        return True
