"""`FAQBotAgent`: answers questions from a list of FAQs (the SDK's prefab).

The FAQs go into the prompt (a model answers from them) and behind the
`search_faqs(query, category)` tool, which ranks them by the words the caller
used (stems, so "shipping" finds "ship") and answers with the best one, the
way a caller on the phone needs it (the SDK's tool lists matching questions).
"""

from __future__ import annotations

import re
from typing import Any

from mediaserver.agent.base import AgentBase
from mediaserver.agent.result import SwaigFunctionResult
from mediaserver.pipeline.llm.scripted.lexicon import STOPWORDS, stem_of

__all__ = ["FAQBotAgent"]


def _stems(text: str) -> set[str]:
    return {stem_of(w) for w in re.findall(r"[a-z0-9']+", text.lower()) if w not in STOPWORDS}


class FAQBotAgent(AgentBase):
    """Answers from `faqs` (``question``, ``answer``, optional ``categories``)."""

    def __init__(
        self,
        faqs: list[dict[str, Any]],
        suggest_related: bool = True,
        persona: str | None = None,
        name: str = "faq_bot",
        route: str = "/faq",
        **kwargs: Any,
    ) -> None:
        super().__init__(name=name, route=route, **kwargs)
        for n, faq in enumerate(faqs, 1):
            if not faq.get("question") or not faq.get("answer"):
                raise ValueError(f"FAQ {n} needs a 'question' and an 'answer'")
        self.faqs = list(faqs)
        self.suggest_related = suggest_related
        self.prompt_add_section(
            "Personality",
            body=persona or "You are a helpful FAQ bot that answers questions accurately.",
        )
        self.prompt_add_section(
            "Knowledge Base",
            body="\n\n".join(f"Q: {f['question']}\nA: {f['answer']}" for f in self.faqs),
        )
        self.set_global_data({"faq_count": len(self.faqs)})
        self.define_tool(
            name="search_faqs",
            description="Search for FAQs matching a specific query or category",
            parameters={
                "query": {"type": "string", "description": "The search query"},
                "category": {"type": "string", "description": "Optional category to filter by"},
            },
            handler=self._search,
        )

    def _search(self, args: dict[str, Any], raw_data: dict[str, Any]) -> SwaigFunctionResult:
        query = _stems(str(args.get("query") or ""))
        category = str(args.get("category") or "").lower()
        ranked = []
        for faq in self.faqs:
            words = _stems(faq["question"])
            score = len(query & words) / (len(words) or 1)
            if category and category in [c.lower() for c in faq.get("categories", [])]:
                score += 0.3
            if score > 0:
                ranked.append((score, faq))
        if not ranked:
            return SwaigFunctionResult("No matching FAQs found.")
        ranked.sort(key=lambda item: -item[0])
        best = ranked[0][1]
        answer = str(best["answer"])
        related = [f["question"] for _, f in ranked[1:3]]
        if self.suggest_related and related:
            answer += " You might also ask: " + " ".join(related)
        return SwaigFunctionResult(answer)
