"""The conversation: `ScriptedBackend`, its configuration, and the turn logic.

Reads the tail of the conversation (a pending question for an argument, a
clarifying question, the previous tool call) and decides, in the order the
package docstring gives, between a tool call and what to say.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from mediaserver.pipeline.llm.base import (
    Done,
    LlmBackend,
    LlmEvent,
    LlmOptions,
    Message,
    Token,
    ToolCall,
    ToolCalls,
    ToolSpec,
)
from mediaserver.pipeline.llm.scripted.filling import Filler
from mediaserver.pipeline.llm.scripted.lexicon import ACK, FILLERS, FOLLOW_LEADS, NO, POLITE, YES
from mediaserver.pipeline.llm.scripted.scoring import HINT, MARGIN, confident, rank
from mediaserver.pipeline.llm.scripted.tools import Param, Tool, profile
from mediaserver.pipeline.llm.scripted.utterance import Utterance

# ---------------------------------------------------------------- configuration

_ANYTHING_ELSE = "Is there anything else I can help with?"


@dataclass
class ScriptedReply:
    """A canned answer.

    Attributes:
        match: Keywords or phrases; the reply is used when any appears in the
            caller's utterance (case-insensitive, whole words).
        reply: What to say; "{user}" is replaced by the caller's utterance and
            "{abilities}" by what the agent's tools can do.
    """

    match: list[str]
    reply: str


def _default_small_talk() -> list[ScriptedReply]:
    return [
        ScriptedReply(
            ["can you hear me", "are you there", "are you still there", "is anyone there"],
            "Yes, I can hear you. How can I help?",
        ),
        ScriptedReply(
            [
                "who are you",
                "what are you",
                "who is this",
                "who am i speaking",
                "who am i talking",
                "are you a robot",
                "are you a bot",
                "are you human",
                "are you real",
                "are you a person",
            ],
            "I'm a virtual assistant. I can {abilities}.",
        ),
        ScriptedReply(
            [
                "what can you do",
                "how can you help",
                "what do you do",
                "can you help",
                "help me",
                "i need help",
                "i need some help",
            ],
            "I can {abilities}. What would you like to do?",
        ),
        ScriptedReply(
            ["never mind", "nevermind", "forget it", "cancel that"],
            "Okay. What else can I help you with?",
        ),
        ScriptedReply(
            [
                "bye",
                "goodbye",
                "good bye",
                "see you",
                "that's all",
                "that is all",
                "that's it",
                "nothing else",
                "have a good day",
                "have a nice day",
            ],
            "Thanks for calling. Goodbye!",
        ),
        ScriptedReply(
            ["thank you", "thanks", "cheers", "appreciate it"], f"You're welcome. {_ANYTHING_ELSE}"
        ),
        ScriptedReply(
            ["how are you", "how's it going", "how are things"],
            "I'm well, thank you. How can I help you?",
        ),
        ScriptedReply(
            ["hello", "hi", "hey", "good morning", "good afternoon", "good evening", "hiya"],
            "Hello! How can I help you today?",
        ),
    ]


@dataclass
class ScriptedConfig:
    """How the scripted engine answers.

    Attributes:
        replies: The agent's canned answers, tried in order before small talk.
        fallback: Said when no reply matches and no tool applies.
        words_per_token: Words in each streamed Token.
        token_delay: Seconds between tokens, to mimic a real model's pace.
        small_talk: Built-in answers to greetings, thanks, goodbye, "who are
            you" and the like, tried after `replies`; empty to turn them off.
        repeat: Said when the utterance held no words (silence, "um").
    """

    replies: list[ScriptedReply] = field(default_factory=list)
    fallback: str = "I'm sorry, I can't help with that."
    words_per_token: int = 1
    token_delay: float = 0.0
    small_talk: list[ScriptedReply] = field(default_factory=_default_small_talk)
    repeat: str = "Sorry, I didn't catch that. Could you say it again?"


def _abilities(tools: Sequence[Tool]) -> str:
    """What the tools can do, as one phrase, for "{abilities}" in a reply."""
    phrases = [t.phrase for t in tools]
    if not phrases:
        return ""
    if len(phrases) == 1:
        return phrases[0]
    return ", ".join(phrases[:-1]) + " and " + phrases[-1]


# ---------------------------------------------------------------- the conversation


@dataclass
class _Pending:
    """A tool we were filling in: the request, and answers to our questions so far."""

    tool: Tool
    request: Utterance
    answers: dict[str, Utterance]
    asked: Param


def _user_at(messages: Sequence[Message], at: int) -> bool:
    return 0 <= at < len(messages) and messages[at].role == "user"


def _assistant_text(messages: Sequence[Message], at: int) -> str:
    if 0 <= at < len(messages) and messages[at].role == "assistant":
        return (messages[at].content or "").strip()
    return ""


def _asked(text: str, tools: Sequence[Tool]) -> list[tuple[Tool, Param]]:
    """The (tool, parameter) pairs whose question ends our message."""
    if not text:
        return []
    return [(t, p) for t in tools for p in t.params if text.endswith(p.question)]


def _pending(messages: Sequence[Message], at: int, tools: Sequence[Tool]) -> _Pending | None:
    """If our last message asked for an argument: what we were filling in."""
    asked = _asked(_assistant_text(messages, at - 1), tools)
    if not asked or not _user_at(messages, at - 2):
        return None
    answers: dict[str, Utterance] = {}
    chain = [(asked, at)]
    k = at - 2
    while True:
        earlier = _asked(_assistant_text(messages, k - 1), tools)
        if not earlier or not _user_at(messages, k - 2):
            break
        chain.append((earlier, k))
        k -= 2
    request = Utterance(messages[k].content or "")
    # The tool: one the whole chain asked about, the best for the request on a tie.
    names = {t.spec.name for t, _ in chain[-1][0]}
    for pairs, _ in chain:
        names &= {t.spec.name for t, _ in pairs}
    candidates = [t for t in tools if t.spec.name in names] or [p[0] for p in asked]
    tool = rank(candidates, request)[0][2]
    for pairs, where in reversed(chain):
        for t, p in pairs:
            if t is tool:
                # Newer answers override older ones for the same parameter.
                answers[p.name] = Utterance(messages[where].content or "")
    last = next(p for t, p in asked if t is tool)
    del answers[last.name]  # the current utterance is the answer being read
    return _Pending(tool, request, answers, last)


def _clarifying(tools: Sequence[Tool]) -> str:
    if len(tools) == 1:
        return f"Do you want me to {tools[0].phrase}?"
    phrases = [t.phrase for t in tools]
    return f"Do you want me to {', '.join(phrases[:-1])}, or {phrases[-1]}?"


def _clarified(
    messages: Sequence[Message], at: int, tools: Sequence[Tool]
) -> tuple[list[Tool], Utterance] | None:
    """If our last message asked which tool was meant: the candidates and the request."""
    text = _assistant_text(messages, at - 1)
    if not text.startswith("Do you want me to ") or not _user_at(messages, at - 2):
        return None
    found = sorted((text.find(t.phrase), n, t) for n, t in enumerate(tools) if t.phrase in text)
    candidates = [t for _, _, t in found]
    if not candidates or _clarifying(candidates) != text:
        return None
    return candidates, Utterance(messages[at - 2].content or "")


def _previous_call(messages: Sequence[Message], at: int) -> ToolCall | None:
    for k in range(at - 1, -1, -1):
        if messages[k].role == "assistant" and messages[k].tool_calls:
            return messages[k].tool_calls[-1]
    return None


def _follow_lead(utt: Utterance) -> int | None:
    """Where the new value starts in a follow-up ("what about London?"), else None."""
    lw = utt.lower
    i = 0
    while i < len(lw) and lw[i] in ACK:
        i += 1
    for lead in FOLLOW_LEADS:
        if tuple(lw[i : i + len(lead)]) == lead:
            return i + len(lead)
    if lw and lw[-1] in ("then", "instead", "too"):
        return i
    return None


class ScriptedBackend(LlmBackend):
    """The offline deterministic engine (registry name "scripted").

    Args:
        config: Replies, fallback and pacing; defaults to `ScriptedConfig()`.
    """

    name = "scripted"

    def __init__(self, config: ScriptedConfig | None = None) -> None:
        self.config = config or ScriptedConfig()
        self._calls = 0

    async def stream(
        self,
        messages: list[Message],
        tools: list[ToolSpec],
        options: LlmOptions | None = None,
    ) -> AsyncIterator[LlmEvent]:
        """Stream the deterministic answer to the conversation.

        Args:
            messages: The conversation; only its tail matters.
            tools: Tools the engine may call.
            options: Ignored (the engine is deterministic).

        Yields:
            Tokens then Done("stop"), or ToolCalls then Done("tool_calls").
        """
        if messages and messages[-1].role == "tool":
            decision: ToolCall | str = self._tool_result(messages)
        else:
            decision = self._decide(messages, [profile(t) for t in tools])
        if isinstance(decision, ToolCall):
            yield ToolCalls((decision,))
            yield Done("tool_calls")
            return
        async for event in self._speak(decision):
            yield event

    # ------------------------------------------------------------ answers

    @staticmethod
    def _tool_result(messages: list[Message]) -> str:
        """What to say about the trailing tool results (several if calls ran in parallel)."""
        results: list[str] = []
        for message in reversed(messages):
            if message.role != "tool":
                break
            content = message.content or ""
            try:
                data = json.loads(content)
            except ValueError:
                data = None
            if isinstance(data, dict) and "response" in data:
                content = str(data["response"])
            elif isinstance(data, str):
                content = data
            results.append(content.strip())
        text = " ".join(r for r in reversed(results) if r)
        return text or "Done."

    async def _speak(self, text: str) -> AsyncIterator[LlmEvent]:
        # Each token carries its words and the whitespace after them, so
        # joining the tokens gives the text back exactly.
        pieces = re.findall(r"\S+\s*", text.strip())
        step = max(1, self.config.words_per_token)
        for n in range(0, len(pieces), step):
            if n and self.config.token_delay > 0:
                await asyncio.sleep(self.config.token_delay)
            yield Token("".join(pieces[n : n + step]))
        yield Done("stop")

    # ------------------------------------------------------------ deciding

    def _decide(self, messages: list[Message], tools: list[Tool]) -> ToolCall | str:
        """A tool call or what to say (see the module docstring for the order)."""
        at = len(messages) - 1
        if at < 0 or messages[at].role != "user":
            return self.config.fallback.replace("{user}", "")
        raw = messages[at].content or ""
        utt = Utterance(raw)
        pending = _pending(messages, at, tools)
        if utt.empty():
            # Still asking: ask the same question, so the answer is read as one.
            if pending is not None:
                return f"Sorry, I didn't catch that. {pending.asked.question}"
            return self.config.repeat

        # 2. An answer to our question for an argument, or for which tool.
        if pending is not None:
            value = Filler(pending.tool, utt).fill([pending.asked], answer=True)
            if value:
                return self._complete(
                    pending.tool, pending.request, {**pending.answers, pending.asked.name: utt}
                )
        clarified = _clarified(messages, at, tools)
        if clarified is not None:
            decided = self._after_clarifying(clarified[0], clarified[1], utt)
            if decided is not None:
                return decided

        # 3. A tool named by this utterance.
        ranked = rank(tools, utt)
        previous = _previous_call(messages, at)
        lead = _follow_lead(utt)
        chosen = confident(ranked, utt)
        if chosen is not None:
            carry = {}
            if previous is not None and previous.name == chosen.spec.name and lead is not None:
                carry = dict(previous.arguments)
            return self._complete(chosen, utt, {}, carry)

        # 5. A follow-up: the previous tool with a new argument.
        if previous is not None:
            followed = self._follow_up(previous, tools, utt, lead)
            if followed is not None:
                return followed

        # 6. Talk: the agent's replies, small talk unless this is a request a
        # tool half matches ("hello, can you check ..."), then clarify.
        hinted = [t for s, _, t in ranked if s >= max(HINT, ranked[0][0] - MARGIN)]
        unsure = bool(hinted) and utt.requestish()
        said = self._talk(utt, raw, tools, messages, at, pending is not None, unsure)
        if said is not None:
            return said
        if pending is not None:
            return f"Sorry, I didn't catch that. {pending.asked.question}"
        if unsure:
            return _clarifying(hinted[:3])
        return self.config.fallback.replace("{user}", raw)

    def _complete(
        self,
        tool: Tool,
        request: Utterance,
        answers: dict[str, Utterance],
        carry: dict[str, Any] | None = None,
    ) -> ToolCall | str:
        """Call the tool with what was heard, or ask for the first missing argument."""
        args: dict[str, Any] = {}
        for param in tool.params:
            answer = answers.get(param.name)
            if answer is not None:
                args.update(Filler(tool, answer).fill([param], answer=True))
        rest = [p for p in tool.params if p.name not in args]
        args.update(Filler(tool, request).fill(rest))
        for name, value in (carry or {}).items():
            if name not in args and any(p.name == name for p in tool.params):
                args[name] = value
        missing = next((p for p in tool.params if p.required and p.name not in args), None)
        if missing is not None:
            return missing.question
        self._calls += 1
        ordered = {p.name: args[p.name] for p in tool.params if p.name in args}
        return ToolCall(f"call_{self._calls}", tool.spec.name, ordered)

    def _after_clarifying(
        self, candidates: list[Tool], request: Utterance, utt: Utterance
    ) -> ToolCall | str | None:
        lw = utt.lower
        if len(candidates) == 1 and lw and lw[0] in YES | ACK:
            both = Utterance(f"{request.raw} {utt.raw}")
            return self._complete(candidates[0], both, {})
        if lw and lw[0] in NO - {"not"} and len(lw) <= 3:
            return "Okay. What can I help you with?"
        ranked = rank(candidates, utt)
        best = ranked[0]
        second = ranked[1][0] if len(ranked) > 1 else 0.0
        if best[0] >= HINT and best[0] - second >= HINT:
            return self._complete(best[2], Utterance(f"{request.raw} {utt.raw}"), {})
        return None

    def _follow_up(
        self, previous: ToolCall, tools: list[Tool], utt: Utterance, lead: int | None
    ) -> ToolCall | None:
        tool = next((t for t in tools if t.spec.name == previous.name), None)
        if tool is None:
            return None
        short = len(utt.content()) <= 3
        if lead is None and not short:
            return None
        params = [p for p in tool.params if p.kind not in ("boolean", "skip", "free")]
        found = Filler(tool, utt).fill(params, answer=True)
        new = {k: v for k, v in found.items() if previous.arguments.get(k) != v}
        if not new:
            return None
        args = {**previous.arguments, **new}
        self._calls += 1
        ordered = {p.name: args[p.name] for p in tool.params if p.name in args}
        return ToolCall(f"call_{self._calls}", tool.spec.name, ordered)

    def _talk(
        self,
        utt: Utterance,
        raw: str,
        tools: list[Tool],
        messages: list[Message],
        at: int,
        asking: bool,
        unsure: bool,
    ) -> str | None:
        replies = (
            [*self.config.replies] if unsure else [*self.config.replies, *self.config.small_talk]
        )
        for reply in replies:
            if any(utt.matches(phrase) for phrase in reply.match):
                text = reply.reply.replace("{user}", raw)
                if "{abilities}" in text:
                    abilities = _abilities(tools)
                    # With no tools there is nothing to list: just offer help.
                    text = (
                        text.replace("{abilities}", abilities)
                        if abilities
                        else "How can I help you?"
                    )
                return text
        lw = [w for w in utt.lower if w not in FILLERS]
        short_answer = all(w in NO | YES | ACK | POLITE for w in lw)
        if lw and len(lw) <= 3 and short_answer and not asking:
            previous = _assistant_text(messages, at - 1)
            if lw[0] in NO and previous.endswith(_ANYTHING_ELSE):
                return "Thanks for calling. Goodbye!"
            if self.config.small_talk:
                return "Okay. What can I help you with?"
        return None
