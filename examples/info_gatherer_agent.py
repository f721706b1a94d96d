"""The SDK's InfoGatherer prefab, unchanged but for its import.

Run it: `.venv/bin/python examples/info_gatherer_agent.py`, then call
`sip:intake@127.0.0.1:5060`: it asks for your name and why you call (read back
for you to confirm), and keeps the answers in the call's global data.
"""

from mediaserver.agent.prefabs import InfoGathererAgent

agent = InfoGathererAgent(
    questions=[
        {"key_name": "full_name", "question_text": "What is your full name?"},
        {"key_name": "reason", "question_text": "How can we help you today?", "confirm": True},
    ],
    name="intake",
    route="/intake",
)
agent.run()
