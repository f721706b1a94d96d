"""Prefab agents with the SignalWire Agents SDK's constructor arguments.

Built: `InfoGatherer` and `SurveyAgent` (gather steps over the contexts
machinery), `FAQBotAgent` and `ReceptionistAgent`. Not yet: the SDK's Concierge.
"""

from __future__ import annotations

from mediaserver.agent.prefabs.faq_bot import FAQBotAgent
from mediaserver.agent.prefabs.info_gatherer import InfoGatherer
from mediaserver.agent.prefabs.receptionist import ReceptionistAgent
from mediaserver.agent.prefabs.survey import SurveyAgent

InfoGathererAgent = InfoGatherer

__all__ = [
    "FAQBotAgent",
    "InfoGatherer",
    "InfoGathererAgent",
    "ReceptionistAgent",
    "SurveyAgent",
]
