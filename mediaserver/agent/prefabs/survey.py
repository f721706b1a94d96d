"""`SurveyAgent`: a survey on the phone (the SDK's prefab).

The questions run as a gather step: a rating is a whole number on its scale,
a multiple choice one of its options, yes/no a boolean, open-ended free text;
an answer that does not fit is asked again. The answers go to global data
under ``survey_responses`` (keyed by question id), and the conclusion is said
after the last one.
"""

from __future__ import annotations

from typing import Any

from mediaserver.agent.base import AgentBase

__all__ = ["SurveyAgent"]

_TYPES = ("rating", "multiple_choice", "yes_no", "open_ended")


class SurveyAgent(AgentBase):
    """Asks `questions` (``id``, ``text``, ``type``, ``options``, ``scale``)."""

    def __init__(
        self,
        survey_name: str,
        questions: list[dict[str, Any]],
        introduction: str | None = None,
        conclusion: str | None = None,
        brand_name: str | None = None,
        max_retries: int = 2,
        name: str = "survey",
        route: str = "/survey",
        **kwargs: Any,
    ) -> None:
        super().__init__(name=name, route=route, **kwargs)
        self.survey_name = survey_name
        self.brand_name = brand_name or "Our Company"
        self.max_retries = max_retries
        self.introduction = (
            introduction or f"Welcome to our {survey_name}. We appreciate your participation."
        )
        self.conclusion = (
            conclusion or "Thank you for completing our survey. Your feedback is valuable to us."
        )
        self.prompt_add_section(
            "Personality",
            body=f"You are a friendly survey agent for {self.brand_name}, "
            f"running the {survey_name}.",
        )
        self.set_params({"static_greeting": self.introduction})
        self.set_global_data({"survey_name": survey_name, "survey_responses": {}})
        step = (
            self.define_contexts()
            .add_context("default")
            .add_step("survey")
            .set_text("Ask the survey's questions and record the answers.")
            .set_gather_info(output_key="survey_responses", completion_message=self.conclusion)
        )
        for n, question in enumerate(questions, 1):
            kind = question.get("type")
            if not question.get("text"):
                raise ValueError(f"Question {n} is missing the 'text' field")
            if kind not in _TYPES:
                raise ValueError(
                    f"Question {n} has an invalid type. Must be one of: {', '.join(_TYPES)}"
                )
            key = str(question.get("id") or f"question_{n}")
            text = str(question["text"])
            if kind == "rating":
                scale = int(question.get("scale", 5))
                step.add_gather_question(
                    key, f"{text} Please answer from 1 to {scale}.", type="integer",
                    min=1, max=scale,
                )  # fmt: skip
            elif kind == "multiple_choice":
                options = [str(o) for o in question.get("options") or []]
                if not options:
                    raise ValueError(f"Question {n} is multiple_choice but has no options")
                step.add_gather_question(
                    key, f"{text} The choices are: {', '.join(options)}.", options=options
                )
            elif kind == "yes_no":
                step.add_gather_question(key, text, type="boolean")
            else:
                step.add_gather_question(key, text)
