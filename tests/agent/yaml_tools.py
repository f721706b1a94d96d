"""A tool function a YAML agent points at ("tests.agent.yaml_tools:order_status")."""


def order_status(order_id: str) -> str:
    return f"Order {order_id} is packed."
