"""The SDK's prefab agents with its constructor arguments."""

from __future__ import annotations

import pytest

from mediaserver import FAQBotAgent, ReceptionistAgent, SurveyAgent
from mediaserver.call.commands import Transfer
from mediaserver.call.conversation import Conversation

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


def test_survey_asks_typed_questions_and_keeps_the_answers() -> None:
    agent = SurveyAgent(
        survey_name="Service Survey",
        brand_name="Acme",
        questions=[
            {"id": "score", "text": "How would you rate us?", "type": "rating", "scale": 5},
            {
                "id": "channel",
                "text": "How did you reach us?",
                "type": "multiple_choice",
                "options": ["phone", "email", "web chat"],
            },
            {"id": "again", "text": "Would you call again?", "type": "yes_no"},
            {"id": "notes", "text": "Anything else?", "type": "open_ended"},
        ],
    )
    spec = agent.to_spec()
    assert spec.greeting == (
        "Welcome to our Service Survey. We appreciate your participation. "
        "How would you rate us? Please answer from 1 to 5."
    )
    convo = Conversation.start(spec)
    flow = convo.flow
    assert flow is not None

    def answer(text: str) -> str:
        outcome = flow.gather(text)
        if outcome.stored is not None:
            convo.gathered(*outcome.stored, outcome.into)
        return outcome.say

    assert answer("nine").startswith("Sorry, I did not get that.")  # off the scale
    assert answer("I'd say four") == "How did you reach us? The choices are: phone, email, web chat."
    assert answer("by carrier pigeon").startswith("Sorry")
    assert answer("we used the web chat") == "Would you call again?"
    assert answer("yes") == "Anything else?"
    assert answer("no, all good") == (
        "Thank you for completing our survey. Your feedback is valuable to us."
    )
    assert convo.global_data["survey_responses"] == {
        "score": 4, "channel": "web chat", "again": True, "notes": "no, all good",
    }  # fmt: skip
    with pytest.raises(ValueError, match="invalid type"):
        SurveyAgent(survey_name="s", questions=[{"text": "q", "type": "essay"}])
