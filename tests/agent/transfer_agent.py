"""An agent for the live action tests: weather questions get the action named by
the ACTION variable, "transfer" to a weather desk (WEATHER_DESK_URI, the default),
"warm" (a warm transfer: the desk hears a summary first), "record" (record_call)
or "hangup".

Its caller asks "what is the weather in paris", a phrase pocketsphinx recognises
reliably from espeak-ng over G.711.
"""

import os

from mediaserver import AgentBase, SwaigFunctionResult


class FrontDesk(AgentBase):
    def __init__(self) -> None:
        super().__init__(name="Front Desk", route="/desk")
        self.prompt_add_section("Instructions", body="Transfer weather questions.")
        self.add_hints(["what is the weather in paris"])

    @AgentBase.tool(name="weather_desk")
    def weather_desk(self) -> SwaigFunctionResult:
        """Transfer the caller to the weather desk."""
        if os.environ.get("ACTION") == "hangup":
            return SwaigFunctionResult("It is sunny. Goodbye.").hangup()
        if os.environ.get("ACTION") == "record":
            return SwaigFunctionResult("Recording from now on.").record_call(control_id="q1")
        if os.environ.get("ACTION") == "warm":
            return SwaigFunctionResult("Let me get a colleague for you.").warm_transfer(
                os.environ["WEATHER_DESK_URI"]
            )
        return SwaigFunctionResult("Transferring you to the weather desk.").connect(
            os.environ["WEATHER_DESK_URI"]
        )


if __name__ == "__main__":
    FrontDesk().run()
