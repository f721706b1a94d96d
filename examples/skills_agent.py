"""A skills agent as the SignalWire Agents SDK documents it, unchanged but for its imports.

Run it: `.venv/bin/python examples/skills_agent.py`, then call
`sip:skills@127.0.0.1:5060` and ask "what time is it in Tokyo?" or "what is
twelve times seven?". The datetime and math skills need nothing else; with
GOOGLE_SEARCH_API_KEY and GOOGLE_SEARCH_ENGINE_ID set it can search the web.
"""

import os

from mediaserver import AgentBase


class SkillsAgent(AgentBase):
    def __init__(self):
        super().__init__(name="Skills Agent", route="/skills")
        self.prompt_add_section("Role",
            body="You are a helpful assistant. You can tell the time and the date "
            "anywhere in the world and do arithmetic.")
        self.add_language("English", "en-US", "rime.spore:mistv2")
        self.add_skill("datetime")
        self.add_skill("math")
        api_key = os.getenv("GOOGLE_SEARCH_API_KEY")
        engine = os.getenv("GOOGLE_SEARCH_ENGINE_ID")
        if api_key and engine:
            self.add_skill("web_search", {
                "api_key": api_key,
                "search_engine_id": engine,
                "num_results": 1,
                "swaig_fields": {"fillers": {"en-US": ["Let me look that up."]}},
            })


agent = SkillsAgent()
agent.run()
