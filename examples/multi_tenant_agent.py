"""One agent serving many tenants, as the SignalWire Agents SDK documents it
(`set_dynamic_config_callback`), unchanged but for its imports.

Run it: `.venv/bin/python examples/multi_tenant_agent.py`, then call
`sip:front@127.0.0.1:5060`. The tenant is the caller's SIP user (or an
X-Tenant header from the carrier): each tenant gets its own greeting, prompt
and data, decided per call before it is answered.
"""

from mediaserver import AgentBase, SwaigFunctionResult

TENANTS = {
    "acme": {"company": "Acme Rockets", "hours": "nine to five"},
    "globex": {"company": "Globex", "hours": "eight to eight"},
}


class FrontDesk(AgentBase):
    def __init__(self):
        super().__init__(name="Front Desk", route="/front")
        self.add_language("English", "en-US", "rime.spore:mistv2")
        self.prompt_add_section("Role", body="You answer the phone.")
        self.set_params({"static_greeting": "Hello, how can I help you?"})
        self.set_dynamic_config_callback(self.per_tenant)

    def per_tenant(self, query_params, body_params, headers, agent):
        tenant = headers.get("X-Tenant") or body_params["call"]["from"]
        if tenant not in TENANTS:
            raise LookupError(f"unknown tenant {tenant!r}")
        company = TENANTS[tenant]["company"]
        agent.prompt_add_section("Company", body=f"You answer calls for {company}.")
        agent.set_params({"static_greeting": f"Thank you for calling {company}."})
        agent.set_global_data({"tenant": tenant, **TENANTS[tenant]})

    @AgentBase.tool(name="opening_hours")
    def opening_hours(self, raw_data=None):
        """Tell the caller when the company is open."""
        data = (raw_data or {}).get("global_data", {})
        return SwaigFunctionResult(f"We are open {data.get('hours', 'every day')}.")


agent = FrontDesk()
agent.run()
