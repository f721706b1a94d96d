"""Tool functions YAML agents point at ("tests.agent.yaml_tools:order_status")."""

from mediaserver import SwaigFunctionResult


def order_status(order_id: str) -> str:
    return f"Order {order_id} is packed."


async def order_status_async(order_id: str) -> str:
    """The same, as a coroutine (awaited by the tool runner, not run in a thread)."""
    return f"Order {order_id} is on its way."


def to_operator() -> SwaigFunctionResult:
    """Transfer to the operator's phone registered with the server (test_cluster)."""
    return SwaigFunctionResult("Connecting you to the operator.").connect("sip:operator@127.0.0.1")
