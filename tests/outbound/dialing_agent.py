"""An agent program that places its own call once its server is up (AgentBase.dial
from another thread, as a scheduler would): it calls CALLEE with a per-call variable
and prints the answer as a `dialed` line."""

import json
import os
import threading
import time

from mediaserver import AgentBase, DialError


class Reminder(AgentBase):
    def __init__(self) -> None:
        super().__init__(name="Reminder", route="/remind")
        self.prompt_add_section("Instructions", body="Remind the callee of the appointment.")
        self.set_params({"static_greeting": "Hello, this is your appointment reminder."})


def place(agent: Reminder) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            answer = agent.dial(os.environ["CALLEE"], variables={"patient": "Sam"})
        except RuntimeError:
            time.sleep(0.2)  # the server is not up yet
            continue
        except DialError as exc:
            print(json.dumps({"event": "dial_refused", "status": exc.status}), flush=True)
            return
        print(json.dumps({"event": "dialed", **answer}), flush=True)
        return


if __name__ == "__main__":
    reminder = Reminder()
    threading.Thread(target=place, args=(reminder,), daemon=True).start()
    reminder.run()
