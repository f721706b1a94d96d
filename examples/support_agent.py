"""The support agent from the SignalWire Agents SDK, unchanged but for its imports.

Run it: `.venv/bin/python examples/support_agent.py`, then call
`sip:support@127.0.0.1:5060` (PORT / HOST set the SIP address,
MEDIASERVER_CONFIG a server config for media ports and models).
"""

from mediaserver import AgentBase, SwaigFunctionResult


class SupportAgent(AgentBase):
    def __init__(self):
        super().__init__(name="Support Agent", route="/support")
        self.prompt_add_section("Instructions",
            body="You are a customer support agent. "
            "Greet the caller and resolve their issue.")
        self.add_language("English", "en-US", "rime.spore:mistv2")
    @AgentBase.tool(name="check_order")
    def check_order(self, order_id: str):
        """Check the status of a customer order.
        Args:
            order_id: The order ID to look up
        """
        return SwaigFunctionResult(f"Order {order_id}: shipped, ETA April 2nd")
agent = SupportAgent()
agent.run()
