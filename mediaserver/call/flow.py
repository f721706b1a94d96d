"""Where a call is in its agent's contexts and steps (sans-IO).

`Flow` holds the current context and step of a call whose agent defines
contexts (`mediaserver.agent.contexts`, the SDK's shape). It says what the
model is told (the step's text and criteria in the system prompt, where it may
go next), which tools it may use (the step's `functions`, plus `next_step` and
`change_context` while there is somewhere to go), and carries out moves,
refusing one the step does not allow. A gather step is run here, not by the
model: its questions are asked one by one, each answer checked against the
question's type (and confirmed when asked), and stored in global data.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from mediaserver.pipeline.llm.base import ToolSpec
from mediaserver.pipeline.llm.scripted.lexicon import NO, YES
from mediaserver.pipeline.llm.spoken import find_numbers, words_of

__all__ = ["BUILTIN_TOOLS", "Flow", "GatherOutcome"]

#: The tools a flow adds for the model to move with.
BUILTIN_TOOLS = ("next_step", "change_context")


@dataclass(frozen=True)
class GatherOutcome:
    """What a gather step makes of the caller's words: what to say, and the
    answer stored (key, value) when one was."""

    say: str
    stored: tuple[str, Any] | None = None
    done: bool = False
    #: The global-data key the answers go under (None: the top level).
    into: str | None = None


class Flow:
    """One call's position in its agent's contexts (see the module docstring).

    Args:
        contexts: `ContextBuilder.to_dict()`.
        base_prompt: the agent's own system prompt.
    """

    def __init__(self, contexts: dict[str, Any], base_prompt: str, greeting: str = "") -> None:
        self.contexts = contexts
        self.base_prompt = base_prompt
        self.context = "default" if "default" in contexts else next(iter(contexts))
        self.step = self._steps()[0]["name"]
        self._question = 0
        # A gather step first: the greeting may end with its first question.
        self._asked = self.gathering and _ask(self._questions()[0]) in greeting
        self._confirming: Any = None

    def first_question(self) -> str | None:
        """The first question of a flow that starts with a gather step (for the greeting)."""
        return _ask(self._questions()[0]) if self.gathering else None

    def _questions(self) -> list[dict[str, Any]]:
        questions: list[dict[str, Any]] = (self._current().get("gather_info") or {}).get(
            "questions", []
        )
        return questions

    # -- where we are ----------------------------------------------------------------------

    def _steps(self, context: str | None = None) -> list[dict[str, Any]]:
        steps: list[dict[str, Any]] = self.contexts[context or self.context]["steps"]
        return steps

    def _current(self) -> dict[str, Any]:
        return next(s for s in self._steps() if s["name"] == self.step)

    def step_targets(self) -> list[str]:
        """The steps the current one may lead to (no `valid_steps`: the next one)."""
        names = [s["name"] for s in self._steps()]
        following = names[names.index(self.step) + 1 :][:1]
        valid = self._current().get("valid_steps")
        if valid is None:
            return [] if self._current().get("end") else following
        out: list[str] = []
        for target in valid:
            out += following if target == "next" else [target]
        return list(dict.fromkeys(out))

    def context_targets(self) -> list[str]:
        """The contexts the current step (or else its context) may lead to."""
        valid = self._current().get("valid_contexts")
        if valid is None:
            valid = self.contexts[self.context].get("valid_contexts") or []
        return [c for c in valid if c in self.contexts and c != self.context]

    def system_prompt(self) -> str:
        """The agent's prompt with the current context's and step's instructions."""
        context, step = self.contexts[self.context], self._current()
        parts = [str(context.get("system_prompt") or self.base_prompt)]
        if context.get("prompt"):
            parts.append(str(context["prompt"]))
        parts.append(f"## Current step: {self.step}\n\n{step.get('text', '')}".strip())
        if step.get("step_criteria"):
            parts.append(f"The step is complete when: {step['step_criteria']}")
        steps, contexts = self.step_targets(), self.context_targets()
        if steps:
            parts.append(f"When it is complete, call next_step with one of: {', '.join(steps)}.")
        if contexts:
            parts.append(f"To change the topic, call change_context with: {', '.join(contexts)}.")
        return "\n\n".join(parts)

    # -- tools -----------------------------------------------------------------------------

    def allows(self, name: str) -> bool:
        """Whether the current step may call the tool `name`."""
        if name == "next_step":
            return bool(self.step_targets())
        if name == "change_context":
            return bool(self.context_targets())
        functions = self._current().get("functions")
        if functions is None:
            return True
        if isinstance(functions, str):
            return functions != "none" and name == functions
        return name in functions

    def builtin_specs(self) -> list[ToolSpec]:
        """`next_step` and `change_context`, while they lead somewhere."""
        specs = []
        steps, contexts = self.step_targets(), self.context_targets()
        if steps:
            specs.append(_move_tool("next_step", "step", steps, "Move to the next step"))
        if contexts:
            specs.append(_move_tool("change_context", "context", contexts, "Change the topic"))
        return specs

    # -- moves -----------------------------------------------------------------------------

    def go_step(self, name: str) -> str:
        """Move to step `name` if the current one allows it; the model's answer."""
        targets = self.step_targets()
        if name not in targets:
            return (
                f"Cannot go to step {name!r} from {self.step!r}; "
                f"valid: {', '.join(targets) or 'none'}."
            )
        self._enter(self.context, name)
        return f"Now in step {name}."

    def go_context(self, name: str) -> str:
        """Move to context `name` (its first step) if allowed; the model's answer."""
        targets = self.context_targets()
        if name not in targets:
            return f"Cannot change to context {name!r}; valid: {', '.join(targets) or 'none'}."
        self._enter(name, self._steps(name)[0]["name"])
        return f"Now in context {name}, step {self.step}."

    def _enter(self, context: str, step: str) -> None:
        self.context, self.step = context, step
        self._question, self._asked, self._confirming = 0, False, None

    # -- gather steps ----------------------------------------------------------------------

    @property
    def gathering(self) -> bool:
        """Whether the current step is asking its questions."""
        gather = self._current().get("gather_info") or {}
        return self._question < len(gather.get("questions", []))

    def gather(self, said: str) -> GatherOutcome:
        """The caller said `said` in a gather step: take it as the answer to the
        question asked (or ask the first one), and say what comes next."""
        gather = self._current()["gather_info"]
        question = gather["questions"][self._question]
        if not self._asked:
            self._asked = True
            return GatherOutcome(_ask(question))
        if self._confirming is not None:
            words = set(words_of(said))
            if words & YES and not words & NO:
                return self._store(gather, question, self._confirming)
            self._confirming = None
            if words & NO:
                return GatherOutcome(f"Sorry. {_ask(question)}")
        value = _typed(question.get("type", "string"), said, question)
        if value is None:
            return GatherOutcome(f"Sorry, I did not get that. {_ask(question)}")
        if question.get("confirm"):
            self._confirming = value
            heard = ("yes" if value else "no") if isinstance(value, bool) else value
            return GatherOutcome(f"I have {heard}. Is that right?")
        return self._store(gather, question, value)

    def _store(self, gather: dict[str, Any], question: dict[str, Any], value: Any) -> GatherOutcome:
        self._confirming = None
        self._question += 1
        stored, into = (question["key"], value), gather.get("output_key") or None
        if self._question < len(gather["questions"]):
            return GatherOutcome(_ask(gather["questions"][self._question]), stored, into=into)
        action = gather.get("completion_action")
        if action:
            names = [s["name"] for s in self._steps()]
            target = names[names.index(self.step) + 1] if action == "next_step" else action
            self._enter(self.context, target)
            if self.gathering:
                self._asked = True
                question = self._current()["gather_info"]["questions"][0]
                return GatherOutcome(f"Thank you. {_ask(question)}", stored, True, into)
        return GatherOutcome(
            str(gather.get("completion_message") or "Thank you."), stored, True, into
        )


def _ask(question: dict[str, Any]) -> str:
    return str(question.get("prompt") or question["question"])


_FILLER = r"^\s*(?:(?:well|um|uh|so|yes|yeah|ok|okay)[,\s]+)*"
#: What callers say before the answer itself: "it's blue", and for a question
#: about a name, "I'm Ann", "this is Ann", "call me Ann".
_LEAD_IN = re.compile(_FILLER + r"(?:it'?s|it\s+is|that'?s|that\s+is)\s+", re.IGNORECASE)
_NAME_LEAD_IN = re.compile(_FILLER + r"(?:i'?m|i\s+am|this\s+is|call\s+me)\s+", re.IGNORECASE)


def _without_lead_in(said: str, question: dict[str, Any]) -> str:
    """The answer without the words before it: "my name is Ann" -> "Ann" when the
    question is about a name ("my X is" only when the question says X)."""
    asked = set(
        words_of(f"{question.get('key', '')} {question.get('question', '')}".replace("_", " "))
    )
    match = re.match(
        _FILLER + r"(?:my|the|our)\s+((?:\w+\s+){0,2}?\w+)\s+(?:is|are|was)\s+", said, re.IGNORECASE
    )
    if match and set(words_of(match.group(1))) <= asked:
        return said[match.end() :]
    if asked & {"name", "who"}:
        said = _NAME_LEAD_IN.sub("", said)
    return _LEAD_IN.sub("", said)


def _typed(kind: str, said: str, question: dict[str, Any] | None = None) -> Any:
    """The answer as its type (within its `options`, `min` and `max` when the
    question has them: our extension of the SDK's shape), or None."""
    question = question or {}
    words = words_of(said)
    options = question.get("options")
    if options:
        # The option whose words the caller said (the longest, "very good" over "good").
        said_words = " ".join(words)
        hits = [o for o in options if f" {' '.join(words_of(str(o)))} " in f" {said_words} "]
        return max(hits, key=lambda o: len(str(o))) if hits else None
    if kind in ("integer", "number"):
        numbers = find_numbers(words)
        if not numbers:
            return None
        value = numbers[0][2]
        if not question.get("min", value) <= value <= question.get("max", value):
            return None
        return int(value) if kind == "integer" else value
    if kind == "boolean":
        found = set(words)
        if found & YES and not found & NO:
            return True
        return False if found & NO else None
    text = _without_lead_in(said.strip(), question).strip().rstrip(".!?,")
    return text or None


def _move_tool(name: str, arg: str, targets: list[str], what: str) -> ToolSpec:
    return ToolSpec(
        name,
        f"{what}: one of {', '.join(targets)}.",
        {
            "type": "object",
            "properties": {arg: {"type": "string", "enum": list(targets)}},
            "required": [arg],
        },
    )
