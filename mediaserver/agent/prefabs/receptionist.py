"""`ReceptionistAgent`: greets, notes who is calling and why, and transfers the
caller to a department (the SDK's prefab)."""

from __future__ import annotations

from typing import Any

from mediaserver.agent.base import AgentBase
from mediaserver.agent.result import SwaigFunctionResult

__all__ = ["ReceptionistAgent"]


class ReceptionistAgent(AgentBase):
    """Transfers to `departments` (``name``, ``description``, ``number``: a SIP
    URI or a number the trunks reach)."""

    def __init__(
        self,
        departments: list[dict[str, str]],
        name: str = "receptionist",
        route: str = "/receptionist",
        greeting: str = "Thank you for calling. How can I help you today?",
        voice: str = "rime.spore",
        **kwargs: Any,
    ) -> None:
        super().__init__(name=name, route=route, **kwargs)
        for n, dept in enumerate(departments, 1):
            for key in ("name", "description", "number"):
                if not dept.get(key):
                    raise ValueError(f"Department {n} is missing '{key}' field")
        self.departments = {d["name"]: d for d in departments}
        self.prompt_add_section(
            "Role",
            body="You are a receptionist. Find out who is calling and why, then transfer "
            "them to the right department.",
            bullets=[f"{d['name']}: {d['description']}" for d in departments],
        )
        self.add_language("English", "en-US", voice)
        self.set_params({"static_greeting": greeting})
        self.set_global_data({"departments": list(departments), "caller_info": {}})
        self.define_tool(
            name="collect_caller_info",
            description="Collect the caller's information for routing",
            parameters={
                "name": {"type": "string", "description": "The caller's name"},
                "reason": {"type": "string", "description": "The reason for the call"},
            },
            handler=self._collect,
        )
        self.define_tool(
            name="transfer_call",
            description="Transfer the caller to the appropriate department",
            parameters={
                "department": {
                    "type": "string",
                    "description": "The department to transfer to",
                    "enum": list(self.departments),
                }
            },
            handler=self._transfer,
        )

    def _collect(self, args: dict[str, Any], raw_data: dict[str, Any]) -> SwaigFunctionResult:
        name, reason = str(args.get("name") or ""), str(args.get("reason") or "")
        return SwaigFunctionResult(
            f"Thank you, {name}. I've noted that you're calling about {reason}."
        ).update_global_data({"caller_info": {"name": name, "reason": reason}})

    def _transfer(self, args: dict[str, Any], raw_data: dict[str, Any]) -> SwaigFunctionResult:
        department = self.departments.get(str(args.get("department") or ""))
        if department is None:
            return SwaigFunctionResult(
                f"Sorry, I couldn't find the {args.get('department')} department."
            )
        caller = (raw_data.get("global_data") or {}).get("caller_info") or {}
        name = caller.get("name") or "the caller"
        return SwaigFunctionResult(
            f"I'll transfer you to our {department['name']} department now. "
            f"Thank you for calling, {name}!",
            post_process=True,
        ).connect(department["number"], final=True)
