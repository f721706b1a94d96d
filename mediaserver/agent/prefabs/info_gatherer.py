"""`InfoGatherer`: asks a list of questions and keeps the answers (the SDK's prefab).

    agent = InfoGatherer(questions=[
        {"key_name": "full_name", "question_text": "What is your full name?"},
        {"key_name": "email", "question_text": "What is your email address?", "confirm": True},
    ])

The questions run as a gather step (`mediaserver.call.flow`): asked one by one,
confirmed where `confirm` is set, and kept in global data as the SDK keeps
them, ``answers: [{"key_name": ..., "answer": ...}]``, for tools and the
post-call summary. `set_question_callback(cb)` picks the questions per call
(`cb(query_params, body_params, headers)`, as the SDK's).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from mediaserver.agent.base import AgentBase

__all__ = ["InfoGatherer"]

QuestionCallback = Callable[[dict[str, Any], dict[str, Any], dict[str, Any]], list[dict[str, Any]]]


def _checked(questions: list[dict[str, Any]]) -> list[dict[str, Any]]:
    if not questions:
        raise ValueError("InfoGatherer needs at least one question")
    for n, question in enumerate(questions, 1):
        for key in ("key_name", "question_text"):
            if not question.get(key):
                raise ValueError(f"Question {n} is missing '{key}' field")
    return questions


class InfoGatherer(AgentBase):
    """Collects answers to `questions` (``key_name``, ``question_text``, ``confirm``).

    Args:
        questions: the questions; None when `set_question_callback` gives them per call.
        name: the agent's name.
        route: its route ("/info_gatherer": SIP user "info_gatherer").
        enable_question_callbacks: accepted (the SDK's switch; callbacks always work).
        **kwargs: as `AgentBase`.
    """

    def __init__(
        self,
        questions: list[dict[str, Any]] | None = None,
        name: str = "info_gatherer",
        route: str = "/info_gatherer",
        enable_question_callbacks: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(name=name, route=route, **kwargs)
        self.prompt_add_section(
            "Objective",
            body="Your role is to get answers to a series of questions, one at a time, "
            "and to keep them.",
        )
        self.set_params({"static_greeting": "Hello. I have a few questions for you."})
        self.set_global_data({"answers": []})
        if questions is not None:
            self._ask(self, _checked(questions))

    @staticmethod
    def _ask(agent: AgentBase, questions: list[dict[str, Any]]) -> None:
        step = (
            agent.define_contexts()
            .add_context("default")
            .add_step("questions")
            .set_text("Ask the questions and record the answers.")
            .set_gather_info(output_key="answers")
        )
        for question in questions:
            step.add_gather_question(
                str(question["key_name"]),
                str(question["question_text"]),
                confirm=bool(question.get("confirm")),
            )

    def set_question_callback(self, callback: QuestionCallback) -> InfoGatherer:
        """Pick the questions per call: `callback(query_params, body_params, headers)`."""

        def per_call(
            query: dict[str, Any], body: dict[str, Any], headers: dict[str, Any], agent: Any
        ) -> None:
            agent._contexts = None  # this call's questions replace any given at start
            self._ask(agent, _checked(callback(query, body, headers)))

        self.set_dynamic_config_callback(per_call)
        return self
