"""Contexts and steps: a structured conversation, as in the SignalWire Agents SDK.

    contexts = agent.define_contexts()
    default = contexts.add_context("default")
    default.add_step("name").set_text("Ask for the caller's name.") \\
        .set_functions(["save_name"]).set_valid_steps(["order"])
    default.add_step("order").set_text("Help with the order.").set_functions(["check_order"])

The builder makes the SDK's shape (`ContextBuilder.to_dict()`); the call runs
it with `mediaserver.call.flow.Flow`: the current step's text joins the system
prompt, only the step's functions are offered (and a call to another is
refused), the model moves with the `next_step` / `change_context` tools (or a
tool's `swml_change_step` / `swml_change_context` action), and a gather step
asks its questions one by one, storing the answers in global data.
"""

from __future__ import annotations

from typing import Any

__all__ = ["Context", "ContextBuilder", "GatherInfo", "GatherQuestion", "Step"]

#: Limits the SDK sets, kept so an agent valid here is valid there.
MAX_CONTEXTS = 50
MAX_STEPS_PER_CONTEXT = 100


def _render(sections: list[dict[str, Any]]) -> str:
    parts = []
    for section in sections:
        parts.append(f"## {section['title']}")
        if "bullets" in section:
            parts.append("\n".join(f"- {b}" for b in section["bullets"]))
        else:
            parts.append(str(section["body"]))
        parts.append("")
    return "\n".join(parts).strip()


class GatherQuestion:
    """One question of a gather step: its answer goes to global data under `key`."""

    def __init__(
        self,
        key: str,
        question: str,
        type: str = "string",  # the SDK's name
        confirm: bool = False,
        prompt: str | None = None,
        functions: list[str] | None = None,
        **limits: Any,
    ) -> None:
        self.key, self.question, self.type = key, question, type
        self.confirm, self.prompt, self.functions = confirm, prompt, functions
        #: Our extension: `options` (the answer must be one), `min` and `max`.
        self.limits = {k: v for k, v in limits.items() if k in ("options", "min", "max")}

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"key": self.key, "question": self.question, **self.limits}
        if self.type != "string":
            out["type"] = self.type
        if self.confirm:
            out["confirm"] = True
        if self.prompt:
            out["prompt"] = self.prompt
        if self.functions:
            out["functions"] = list(self.functions)
        return out


class GatherInfo:
    """A gather step's questions, where the answers go, and what follows."""

    def __init__(
        self,
        output_key: str | None = None,
        completion_action: str | None = None,
        prompt: str | None = None,
    ) -> None:
        self.questions: list[GatherQuestion] = []
        self.output_key, self.completion_action, self.prompt = output_key, completion_action, prompt
        self.completion_message: str | None = None

    def add_question(self, key: str, question: str, **kwargs: Any) -> GatherInfo:
        self.questions.append(GatherQuestion(key, question, **kwargs))
        return self

    def to_dict(self) -> dict[str, Any]:
        if not self.questions:
            raise ValueError("gather_info must have at least one question")
        out: dict[str, Any] = {"questions": [q.to_dict() for q in self.questions]}
        for key in ("prompt", "output_key", "completion_action", "completion_message"):
            if getattr(self, key):
                out[key] = getattr(self, key)
        return out


class Step:
    """One step of a context (chainable setters, the SDK's names)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._text: str | None = None
        self._sections: list[dict[str, Any]] = []
        self._criteria: str | None = None
        self._functions: str | list[str] | None = None
        self._valid_steps: list[str] | None = None
        self._valid_contexts: list[str] | None = None
        self._end = False
        self._skip_user_turn = False
        self._gather: GatherInfo | None = None
        self._reset: dict[str, Any] = {}

    def set_text(self, text: str) -> Step:
        """The step's instructions (instead of sections)."""
        if self._sections:
            raise ValueError(f"step {self.name!r}: set_text and add_section cannot be mixed")
        self._text = text
        return self

    def add_section(self, title: str, body: str) -> Step:
        if self._text is not None:
            raise ValueError(f"step {self.name!r}: set_text and add_section cannot be mixed")
        self._sections.append({"title": title, "body": body})
        return self

    def add_bullets(self, title: str, bullets: list[str]) -> Step:
        if self._text is not None:
            raise ValueError(f"step {self.name!r}: set_text and add_bullets cannot be mixed")
        self._sections.append({"title": title, "bullets": list(bullets)})
        return self

    def clear_sections(self) -> Step:
        self._sections, self._text = [], None
        return self

    def set_step_criteria(self, criteria: str) -> Step:
        """When the step is done (the model reads it)."""
        self._criteria = criteria
        return self

    def set_functions(self, functions: str | list[str]) -> Step:
        """The tools this step may use: names, or "none"."""
        self._functions = functions if isinstance(functions, str) else list(functions)
        return self

    def set_valid_steps(self, steps: list[str]) -> Step:
        """Where the step may go ("next": the following step; []: nowhere)."""
        self._valid_steps = list(steps)
        return self

    def set_valid_contexts(self, contexts: list[str]) -> Step:
        self._valid_contexts = list(contexts)
        return self

    def set_end(self, end: bool) -> Step:
        self._end = end
        return self

    def set_skip_user_turn(self, skip: bool) -> Step:
        self._skip_user_turn = skip
        return self

    def set_gather_info(
        self,
        output_key: str | None = None,
        completion_action: str | None = None,
        prompt: str | None = None,
        completion_message: str | None = None,
    ) -> Step:
        """Make this a gather step (add its questions with `add_gather_question`);
        `completion_message` (ours) is said after the last answer."""
        self._gather = GatherInfo(output_key, completion_action, prompt)
        self._gather.completion_message = completion_message
        return self

    def add_gather_question(
        self,
        key: str,
        question: str,
        type: str = "string",  # the SDK's name
        confirm: bool = False,
        prompt: str | None = None,
        functions: list[str] | None = None,
        **limits: Any,
    ) -> Step:
        """A question; `limits` (ours): `options`, `min`, `max` the answer must meet."""
        if self._gather is None:
            raise ValueError(f"step {self.name!r}: call set_gather_info first")
        self._gather.add_question(
            key, question, type=type, confirm=confirm, prompt=prompt, functions=functions,
            **limits,
        )  # fmt: skip
        return self

    def set_reset_system_prompt(self, system_prompt: str) -> Step:
        self._reset["system_prompt"] = system_prompt
        return self

    def set_reset_user_prompt(self, user_prompt: str) -> Step:
        self._reset["user_prompt"] = user_prompt
        return self

    def set_reset_consolidate(self, consolidate: bool) -> Step:
        self._reset["consolidate"] = consolidate
        return self

    def set_reset_full_reset(self, full_reset: bool) -> Step:
        self._reset["full_reset"] = full_reset
        return self

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "text": self._text or _render(self._sections)}
        if self._criteria:
            out["step_criteria"] = self._criteria
        if self._functions is not None:
            out["functions"] = self._functions
        if self._valid_steps is not None:
            out["valid_steps"] = self._valid_steps
        if self._valid_contexts is not None:
            out["valid_contexts"] = self._valid_contexts
        if self._end:
            out["end"] = True
        if self._skip_user_turn:
            out["skip_user_turn"] = True
        if self._reset:
            out["reset"] = dict(self._reset)
        if self._gather is not None:
            out["gather_info"] = self._gather.to_dict()
        return out


class Context:
    """A named workflow of steps, with its own prompt and where it may lead."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.steps: dict[str, Step] = {}
        self._valid_contexts: list[str] | None = None
        self._prompt: str | None = None
        self._sections: list[dict[str, Any]] = []
        self._system_prompt: str | None = None
        self._system_sections: list[dict[str, Any]] = []
        self._extra: dict[str, Any] = {}

    def add_step(
        self,
        name: str,
        *,
        task: str | None = None,
        bullets: list[str] | None = None,
        criteria: str | None = None,
        functions: str | list[str] | None = None,
        valid_steps: list[str] | None = None,
    ) -> Step:
        if name in self.steps:
            raise ValueError(f"Step '{name}' already exists in context '{self.name}'")
        if len(self.steps) >= MAX_STEPS_PER_CONTEXT:
            raise ValueError(f"Maximum steps per context ({MAX_STEPS_PER_CONTEXT}) exceeded")
        step = self.steps[name] = Step(name)
        if task is not None:
            step.add_section("Task", task)
        if bullets is not None:
            step.add_bullets("Process", bullets)
        if criteria is not None:
            step.set_step_criteria(criteria)
        if functions is not None:
            step.set_functions(functions)
        if valid_steps is not None:
            step.set_valid_steps(valid_steps)
        return step

    def get_step(self, name: str) -> Step | None:
        return self.steps.get(name)

    def remove_step(self, name: str) -> Context:
        self.steps.pop(name, None)
        return self

    def move_step(self, name: str, position: int) -> Context:
        if name not in self.steps:
            raise ValueError(f"Step '{name}' not found in context '{self.name}'")
        order = [n for n in self.steps if n != name]
        order.insert(position, name)
        self.steps = {n: self.steps[n] for n in order}
        return self

    def set_valid_contexts(self, contexts: list[str]) -> Context:
        self._valid_contexts = list(contexts)
        return self

    def set_prompt(self, prompt: str) -> Context:
        self._prompt = prompt
        return self

    def add_section(self, title: str, body: str) -> Context:
        self._sections.append({"title": title, "body": body})
        return self

    def add_bullets(self, title: str, bullets: list[str]) -> Context:
        self._sections.append({"title": title, "bullets": list(bullets)})
        return self

    def set_system_prompt(self, system_prompt: str) -> Context:
        self._system_prompt = system_prompt
        return self

    def add_system_section(self, title: str, body: str) -> Context:
        self._system_sections.append({"title": title, "body": body})
        return self

    def add_system_bullets(self, title: str, bullets: list[str]) -> Context:
        self._system_sections.append({"title": title, "bullets": list(bullets)})
        return self

    def _set(self, key: str, value: Any) -> Context:
        self._extra[key] = value
        return self

    def set_post_prompt(self, post_prompt: str) -> Context:
        return self._set("post_prompt", post_prompt)

    def set_consolidate(self, consolidate: bool) -> Context:
        return self._set("consolidate", consolidate)

    def set_full_reset(self, full_reset: bool) -> Context:
        return self._set("full_reset", full_reset)

    def set_user_prompt(self, user_prompt: str) -> Context:
        return self._set("user_prompt", user_prompt)

    def set_isolated(self, isolated: bool) -> Context:
        return self._set("isolated", isolated)

    def set_enter_fillers(self, fillers: dict[str, list[str]]) -> Context:
        return self._set("enter_fillers", dict(fillers))

    def set_exit_fillers(self, fillers: dict[str, list[str]]) -> Context:
        return self._set("exit_fillers", dict(fillers))

    def add_enter_filler(self, language_code: str, fillers: list[str]) -> Context:
        self._extra.setdefault("enter_fillers", {})[language_code] = list(fillers)
        return self

    def add_exit_filler(self, language_code: str, fillers: list[str]) -> Context:
        self._extra.setdefault("exit_fillers", {})[language_code] = list(fillers)
        return self

    def to_dict(self) -> dict[str, Any]:
        if not self.steps:
            raise ValueError(f"Context '{self.name}' must have at least one step")
        out: dict[str, Any] = {"steps": [s.to_dict() for s in self.steps.values()]}
        if self._valid_contexts is not None:
            out["valid_contexts"] = self._valid_contexts
        prompt = self._prompt or _render(self._sections)
        if prompt:
            out["prompt"] = prompt
        system = self._system_prompt or _render(self._system_sections)
        if system:
            out["system_prompt"] = system
        out.update(self._extra)
        return out


class ContextBuilder:
    """The agent's contexts (`AgentBase.define_contexts()` returns it)."""

    def __init__(self, agent: Any = None) -> None:
        del agent  # the SDK passes its agent; nothing here needs it
        self.contexts: dict[str, Context] = {}

    def add_context(self, name: str) -> Context:
        if name in self.contexts:
            raise ValueError(f"Context '{name}' already exists")
        if len(self.contexts) >= MAX_CONTEXTS:
            raise ValueError(f"Maximum number of contexts ({MAX_CONTEXTS}) exceeded")
        context = self.contexts[name] = Context(name)
        return context

    def get_context(self, name: str) -> Context | None:
        return self.contexts.get(name)

    def validate(self) -> None:
        """The SDK's rules (the message names the context, step or reference)."""
        if not self.contexts:
            raise ValueError("At least one context must be defined")
        if len(self.contexts) == 1 and "default" not in self.contexts:
            raise ValueError("When using a single context, it must be named 'default'")
        for cname, context in self.contexts.items():
            if not context.steps:
                raise ValueError(f"Context '{cname}' must have at least one step")
            for target in context._valid_contexts or []:
                if target not in self.contexts:
                    raise ValueError(f"Context '{cname}' references unknown context '{target}'")
            names = list(context.steps)
            for sname, step in context.steps.items():
                for target in step._valid_steps or []:
                    if target != "next" and target not in context.steps:
                        raise ValueError(
                            f"Step '{sname}' in context '{cname}' references unknown step "
                            f"'{target}'"
                        )
                for target in step._valid_contexts or []:
                    if target not in self.contexts:
                        raise ValueError(
                            f"Step '{sname}' in context '{cname}' references unknown context "
                            f"'{target}'"
                        )
                gather = step._gather
                if gather is None:
                    continue
                keys = [q.key for q in gather.questions]
                if not keys or len(set(keys)) != len(keys):
                    raise ValueError(
                        f"Step '{sname}' in context '{cname}' has gather_info with no or "
                        "duplicate question keys"
                    )
                action = gather.completion_action
                last = names.index(sname) == len(names) - 1
                if (action == "next_step" and last) or (
                    action not in (None, "next_step") and action not in context.steps
                ):
                    raise ValueError(
                        f"Step '{sname}' in context '{cname}' has gather_info "
                        f"completion_action={action!r} that leads nowhere"
                    )

    def to_dict(self) -> dict[str, Any]:
        self.validate()
        return {name: context.to_dict() for name, context in self.contexts.items()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ContextBuilder:
        """A builder from the SDK's dictionary shape (`to_dict`'s, as YAML holds it).

        Raises:
            ValueError: a context or step is malformed (the message names it).
        """
        builder = cls()
        for cname, cdata in (data or {}).items():
            if not isinstance(cdata, dict) or not isinstance(cdata.get("steps"), list):
                raise ValueError(f"context {cname!r} needs a list of steps")
            context = builder.add_context(str(cname))
            for key, value in cdata.items():
                if key == "valid_contexts":
                    context.set_valid_contexts(value)
                elif key in ("prompt", "system_prompt"):
                    getattr(context, f"set_{key}")(str(value))
                elif key != "steps":
                    context._set(key, value)
            for sdata in cdata["steps"]:
                if not isinstance(sdata, dict) or not sdata.get("name"):
                    raise ValueError(f"context {cname!r}: every step needs a name")
                step = context.add_step(str(sdata["name"])).set_text(str(sdata.get("text", "")))
                _step_from_dict(step, sdata)
        return builder


def _step_from_dict(step: Step, data: dict[str, Any]) -> None:
    if "step_criteria" in data:
        step.set_step_criteria(str(data["step_criteria"]))
    if "functions" in data:
        step.set_functions(data["functions"])
    if "valid_steps" in data:
        step.set_valid_steps(data["valid_steps"])
    if "valid_contexts" in data:
        step.set_valid_contexts(data["valid_contexts"])
    step.set_end(bool(data.get("end"))).set_skip_user_turn(bool(data.get("skip_user_turn")))
    step._reset = dict(data.get("reset") or {})
    gather = data.get("gather_info")
    if gather:
        step.set_gather_info(
            gather.get("output_key"),
            gather.get("completion_action"),
            gather.get("prompt"),
            gather.get("completion_message"),
        )
        for q in gather.get("questions") or []:
            step.add_gather_question(
                str(q["key"]),
                str(q["question"]),
                type=str(q.get("type", "string")),
                confirm=bool(q.get("confirm")),
                prompt=q.get("prompt"),
                functions=q.get("functions"),
                **{k: q[k] for k in ("options", "min", "max") if k in q},
            )
