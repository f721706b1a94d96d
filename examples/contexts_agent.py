"""A contexts-and-steps agent as the SignalWire Agents SDK documents it, unchanged
but for its imports.

Run it: `.venv/bin/python examples/contexts_agent.py`, then call
`sip:desk@127.0.0.1:5060`. The agent asks the caller's name (a gather step: the
answer goes to global data under "caller"), then helps with orders, where the
only tool it may use is check_order.
"""

from mediaserver import AgentBase, SwaigFunctionResult


class OrderDesk(AgentBase):
    def __init__(self):
        super().__init__(name="Order Desk", route="/desk")
        self.prompt_add_section("Role", body="You help callers with their orders.")
        self.add_language("English", "en-US", "rime.spore:mistv2")
        self.set_params({"static_greeting": "Hello, this is the order desk."})

        contexts = self.define_contexts()
        default = contexts.add_context("default")
        default.add_step("identify") \
            .set_text("Find out who is calling.") \
            .set_gather_info(output_key="caller", completion_action="next_step") \
            .add_gather_question("name", "What is your name?")
        default.add_step("orders") \
            .add_section("Task", "Help the caller with their order.") \
            .set_step_criteria("The caller knows where their order is") \
            .set_functions(["check_order"]) \
            .set_valid_steps([])

    @AgentBase.tool(name="check_order")
    def check_order(self, order_id: str):
        """Check the status of a customer order.
        Args:
            order_id: The order ID to look up
        """
        return SwaigFunctionResult(f"Order {order_id}: shipped, ETA April 2nd")

    @AgentBase.tool(name="cancel_order")
    def cancel_order(self, order_id: str):
        """Cancel a customer order.
        Args:
            order_id: The order ID to cancel
        """
        return SwaigFunctionResult(f"Order {order_id} is cancelled.")


agent = OrderDesk()
agent.run()
