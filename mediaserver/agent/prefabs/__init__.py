"""Prefab agents with the SignalWire Agents SDK's constructor arguments.

`InfoGatherer` is built (a gather step over the contexts machinery); the SDK's
Survey, Receptionist, FAQBot and Concierge are not yet and fail naming
themselves when imported from `mediaserver`.
"""

from __future__ import annotations

from mediaserver.agent.prefabs.info_gatherer import InfoGatherer

InfoGathererAgent = InfoGatherer

__all__ = ["InfoGatherer", "InfoGathererAgent"]
