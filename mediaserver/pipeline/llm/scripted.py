"""An offline, deterministic stand-in for a chat model.

For development, demos and tests: no network, no model weights, the same
answer every time. It understands just enough to exercise a voice agent end
to end: it calls tools when the caller names them, fills their arguments from
the transcript (numbers said as words, spelled order codes, enum values,
yes/no), asks for what is missing, speaks tool results, and otherwise answers
from a list of keyword-triggered replies.

Tool choice: each tool is scored against the caller's words. A word of the
tool's name (split on "_" and camelCase) that the caller said scores 2, a
content word of its description scores 1; stopwords never score. The best tool
is called when its score is at least 2, i.e. the caller said one of its name
words or two of its description words; on a tie the first tool wins.

Follow-ups: when the engine asked "What is the <param>?" and the caller
answers, the answer fills that parameter and the original request is tried
again, so a missing order number can be supplied in the next turn.
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
from mediaserver.pipeline.llm.spoken import (
    find_numbers,
    find_spelled,
    split_identifier,
    words_of,
)

__all__ = ["ScriptedBackend", "ScriptedConfig", "ScriptedReply"]


def _set(words: str) -> frozenset[str]:
    return frozenset(words.split())


STOPWORDS = _set(
    """a an the and or but if then else of to in on at by for with from about into over
    is are was were be been being am do does did done have has had having i me my mine we us
    our you your yours he him his she her it its they them their this that these those what
    which who whom whose when where why how can could would should will shall may might must
    please thanks thank yes no not get got set give let make want wanted need like just some
    any all there here as so up out one s t"""
)

# Parameter names or descriptions with these words hold codes to spell, not prose.
_CODE_WORDS = _set(
    "id ids code number num no ref reference pin zip postcode phone serial sku tracking "
    "confirmation"
)
_YES = _set("yes yeah yep yup true sure correct affirmative ok okay")
_NO = _set("no nope nah false not don't dont without negative never")

_QUESTION_RE = re.compile(r"^What is the ([a-z0-9 ]+)\?$")


@dataclass
class ScriptedReply:
    """A canned answer.

    Attributes:
        match: Keywords or phrases; the reply is used when any appears in the
            caller's utterance (case-insensitive, whole words).
        reply: What to say; "{user}" is replaced by the caller's utterance.
    """

    match: list[str]
    reply: str


@dataclass
class ScriptedConfig:
    """How the scripted engine answers.

    Attributes:
        replies: Canned answers, tried in order.
        fallback: Said when no reply matches and no tool applies.
        words_per_token: Words in each streamed Token.
        token_delay: Seconds between tokens, to mimic a real model's pace.
    """

    replies: list[ScriptedReply] = field(default_factory=list)
    fallback: str = "I'm sorry, I can't help with that."
    words_per_token: int = 1
    token_delay: float = 0.0


def _stem(word: str) -> str:
    # Crude plural folding so "orders" finds check_order; good enough for names.
    if word.endswith("'s"):
        word = word[:-2]
    if len(word) > 3 and word.endswith("s") and not word.endswith("ss"):
        word = word[:-1]
    return word


def _spaced(name: str) -> str:
    return " ".join(split_identifier(name))


@dataclass
class _Request:
    """The caller's request: the utterance plus answers to our follow-up questions."""

    text: str
    answers: dict[str, str]


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
            async for event in self._speak(self._tool_result(messages)):
                yield event
            return
        request = self._request(messages)
        if tools and request is not None:
            decision = self._decide(request, tools)
            if isinstance(decision, ToolCall):
                yield ToolCalls((decision,))
                yield Done("tool_calls")
                return
            if decision is not None:
                async for event in self._speak(decision):
                    yield event
                return
        last = messages[-1] if messages else None
        text = (last.content or "") if last is not None and last.role == "user" else ""
        async for event in self._speak(self._reply(text)):
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

    def _reply(self, text: str) -> str:
        padded = f" {' '.join(words_of(text))} "
        for reply in self.config.replies:
            for phrase in reply.match:
                words = words_of(phrase)
                if words and f" {' '.join(words)} " in padded:
                    return reply.reply.replace("{user}", text)
        return self.config.fallback.replace("{user}", text)

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

    # ------------------------------------------------------------ tools

    @staticmethod
    def _request(messages: list[Message]) -> _Request | None:
        """The last user request, folding in answers to our "What is the X?" questions."""
        at = len(messages) - 1
        while at >= 0 and messages[at].role != "user":
            at -= 1
        if at < 0:
            return None
        answers: dict[str, str] = {}
        while at >= 2 and messages[at - 1].role == "assistant" and messages[at - 2].role == "user":
            asked = _QUESTION_RE.match((messages[at - 1].content or "").strip())
            if asked is None:
                break
            # Older answers must not override newer ones for the same parameter.
            answers.setdefault(asked.group(1), messages[at].content or "")
            at -= 2
        return _Request(messages[at].content or "", answers)

    def _decide(self, request: _Request, tools: list[ToolSpec]) -> ToolCall | str | None:
        """A call, a question for a missing parameter, or None when no tool applies."""
        words = words_of(request.text)
        stems = {_stem(w) for w in words}
        best: ToolSpec | None = None
        best_score = 0
        for tool in tools:
            name_words = {_stem(w) for w in split_identifier(tool.name)} - STOPWORDS
            desc_words = {_stem(w) for w in words_of(tool.description)} - STOPWORDS - name_words
            score = 2 * len(name_words & stems) + len(desc_words & stems)
            if score > best_score:  # strict: the first tool wins a tie
                best, best_score = tool, score
        if best is None or best_score < 2:
            return None
        # Arguments come from the words after the last tool-name word the caller
        # said ("check order one two three"), falling back to the whole utterance.
        name_stems = {_stem(w) for w in split_identifier(best.name)} - STOPWORDS
        start = 0
        for n, word in enumerate(words):
            if _stem(word) in name_stems:
                start = n + 1
        # Free text does not start with words that only named the tool
        # ("weather forecast for new york" -> city "new york").
        tool_words = name_stems | {_stem(w) for w in words_of(best.description)}
        arguments, missing = _fill(best.parameters, words, start, request.answers, tool_words)
        if missing is not None:
            return f"What is the {_spaced(missing)}?"
        self._calls += 1
        return ToolCall(f"call_{self._calls}", best.name, arguments)


# ---------------------------------------------------------------- argument filling


def _kind(name: str, schema: dict[str, Any]) -> str:
    if "enum" in schema:
        return "enum"
    kind = schema.get("type", "string")
    if isinstance(kind, list):  # ["string", "null"]
        kind = next((k for k in kind if k != "null"), "string")
    if kind == "string":
        hints = set(split_identifier(name)) | set(words_of(str(schema.get("description", ""))))
        return "code" if hints & _CODE_WORDS else "text"
    return str(kind)


def _fill(
    parameters: dict[str, Any],
    words: list[str],
    start: int,
    answers: dict[str, str],
    tool_words: frozenset[str] | set[str] = frozenset(),
) -> tuple[dict[str, Any], str | None]:
    """Arguments from the utterance, and the first required parameter left empty."""
    props: dict[str, Any] = parameters.get("properties") or {}
    required = [str(r) for r in parameters.get("required") or []]
    used = [False] * len(words)
    args: dict[str, Any] = {}
    kinds = {name: _kind(name, schema or {}) for name, schema in props.items()}

    # An answer to "What is the X?" fills X from that answer alone.
    for name, schema in props.items():
        answer = answers.get(_spaced(name))
        if answer is not None:
            value = _value(kinds[name], name, schema or {}, words_of(answer), answer)
            if value is not None:
                args[name] = value

    # The most specific readers go first and claim their words, so that free
    # text and numbers do not swallow a spelled code or an enum value.
    order = ["enum", "code", "boolean", "integer", "number", "text"]
    for kind in order:
        for name, schema in props.items():
            if kinds[name] != kind or name in args:
                continue
            value = _extract(kind, name, schema or {}, words, start, used, tool_words)
            if value is not None:
                args[name] = value
    missing = next((r for r in required if r not in args), None)
    return args, missing


def _value(kind: str, name: str, schema: dict[str, Any], words: list[str], raw: str) -> Any:
    """A whole answer read as one parameter value."""
    if kind == "text":
        return raw.strip() or None
    return _extract(kind, name, schema, words, 0, [False] * len(words))


def _extract(
    kind: str,
    name: str,
    schema: dict[str, Any],
    words: list[str],
    start: int,
    used: list[bool],
    tool_words: frozenset[str] | set[str] = frozenset(),
) -> Any:
    """One parameter value from the free words of the utterance; marks its words used."""

    def free(a: int, b: int) -> bool:
        return not any(used[a:b])

    def claim(a: int, b: int) -> None:
        used[a:b] = [True] * (b - a)

    if kind == "enum":
        # Longest enum value first, so "extra large" beats "large".
        options = sorted(schema["enum"], key=lambda v: -len(words_of(str(v))))
        for option in options:
            target = words_of(str(option)) or split_identifier(str(option))
            for a in range(len(words) - len(target) + 1):
                if target and words[a : a + len(target)] == target and free(a, a + len(target)):
                    claim(a, a + len(target))
                    return option
        return None
    if kind == "code":
        spans = [s for s in find_spelled(words[start:]) if free(s[0] + start, s[1] + start)]
        if not spans:
            return None
        a, b, code = max(reversed(spans), key=lambda s: len(s[2]))
        claim(a + start, b + start)
        return code
    if kind in ("integer", "number"):
        for a, b, value in _near_name_first(find_numbers(words), name, words):
            if not free(a, b):
                continue
            if kind == "integer" and isinstance(value, float):
                if not value.is_integer():
                    continue
                value = int(value)
            claim(a, b)
            return value
        return None
    if kind == "boolean":
        name_words = set(split_identifier(name)) - STOPWORDS
        mentioned = False
        for a, word in enumerate(words):
            if used[a]:
                continue
            if word in _NO:
                claim(a, a + 1)
                return False
            if word in _YES:
                claim(a, a + 1)
                return True
            mentioned = mentioned or word in name_words
        # "with gift wrap" (no yes/no word) means yes.
        return True if mentioned else None
    if kind == "text":
        rest = [w for n, w in enumerate(words) if n >= start and not used[n]]
        while rest and (rest[0] in STOPWORDS or _stem(rest[0]) in tool_words):
            rest.pop(0)
        if not rest:
            return None
        claim(start, len(words))
        return " ".join(rest)
    return None  # arrays and objects are beyond a scripted engine


def _near_name_first(
    spans: Sequence[tuple[int, int, int | float]], name: str, words: list[str]
) -> list[tuple[int, int, int | float]]:
    """Number spans, the one right after a mention of the parameter first ("adults two")."""
    name_words = set(split_identifier(name)) - STOPWORDS
    mentions = {n + 1 for n, w in enumerate(words) if _stem(w) in {_stem(x) for x in name_words}}
    return sorted(spans, key=lambda s: 0 if s[0] in mentions else 1)
