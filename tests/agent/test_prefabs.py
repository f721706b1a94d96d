"""The SDK's prefab agents with its constructor arguments."""

from __future__ import annotations

import pytest

from mediaserver import FAQBotAgent, ReceptionistAgent
from mediaserver.call.commands import Transfer

FAQS = [
    {"question": "What are your opening hours?", "answer": "We are open nine to five."},
    {
        "question": "How long does shipping take?",
        "answer": "Shipping takes three days.",
        "categories": ["orders"],
    },
    {"question": "Can I return an item?", "answer": "Returns are free for 30 days."},
]


def test_faq_bot_answers_from_its_faqs_by_the_callers_words() -> None:
    bot = FAQBotAgent(faqs=FAQS, suggest_related=False)
    assert "Q: Can I return an item?" in bot.get_prompt()
    search = bot.tools["search_faqs"].handler
    assert search({"query": "when are you open"}, {}).response == "We are open nine to five."
    # Stems: "shipped" finds "shipping".
    assert search({"query": "how long until it is shipped"}, {}).response == (
        "Shipping takes three days."
    )
    assert search({"query": "weather"}, {}).response == "No matching FAQs found."
    related = FAQBotAgent(faqs=FAQS).tools["search_faqs"].handler
    answer = related({"query": "return an item", "category": "orders"}, {}).response
    assert answer.startswith("Returns are free for 30 days. You might also ask:")
    with pytest.raises(ValueError, match="FAQ 1 needs"):
        FAQBotAgent(faqs=[{"question": "q"}])


def test_receptionist_notes_the_caller_and_transfers_to_a_department() -> None:
    agent = ReceptionistAgent(
        departments=[
            {"name": "sales", "description": "New orders", "number": "sip:sales@127.0.0.1"},
            {"name": "support", "description": "Help", "number": "+15551234567"},
        ]
    )
    spec = agent.to_spec()
    assert spec.greeting == "Thank you for calling. How can I help you today?"
    assert "- sales: New orders" in spec.system_prompt
    tools = agent.tools
    assert tools["transfer_call"].spec.parameters["properties"]["department"]["enum"] == [
        "sales",
        "support",
    ]
    noted = tools["collect_caller_info"].handler({"name": "Ann", "reason": "a refund"}, {})
    assert noted.to_dict()["action"] == [
        {"set_global_data": {"caller_info": {"name": "Ann", "reason": "a refund"}}}
    ]
    raw = {"global_data": {"caller_info": {"name": "Ann"}}}
    moved = tools["transfer_call"].handler({"department": "support"}, raw)
    assert moved.response.endswith("Thank you for calling, Ann!")
    assert moved.to_tool_output()[1] == (Transfer("+15551234567"),)
    with pytest.raises(ValueError, match="Department 1 is missing 'number'"):
        ReceptionistAgent(departments=[{"name": "x", "description": "y"}])
