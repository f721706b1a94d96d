"""A tool function a YAML agent points at ("tests.agent.yaml_tools:order_status")."""


def order_status(order_id: str) -> str:
    return f"Order {order_id} is packed."


async def order_status_async(order_id: str) -> str:
    """The same, as a coroutine (awaited by the tool runner, not run in a thread)."""
    return f"Order {order_id} is on its way."
