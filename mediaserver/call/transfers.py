"""A transfer the agent asked for, from the request to its outcome (a part of
`CallActor`): REFER or a bridge, or a warm transfer (the caller holds while the
target is called and told the summary of the call). The actor decides what
the outcome means for the call; this part tells the model (the tool that asked)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final

from mediaserver.call import events as ev
from mediaserver.call.commands import Transfer
from mediaserver.call.control import CallControl
from mediaserver.call.conversation import Conversation
from mediaserver.call.ports import CallPorts
from mediaserver.call.summary import handoff_summary
from mediaserver.pipeline.llm.base import LlmBackend
from mediaserver.pipeline.settings import PipelineSettings

__all__ = ["TRANSFER_TIMEOUT", "Transfers"]

#: Some phones never send the final NOTIFY: do not wait for ever (s).
TRANSFER_TIMEOUT: Final = 30.0
#: A warm transfer also waits for the summary, the target's ring and the briefing.
WARM_TRANSFER_EXTRA: Final = 60.0


class Transfers:
    """The agent's transfer in progress (see the module docstring).

    Args:
        ports: the actor's plumbing (the "transfer" timer, notes, children).
        call: the call (its `transfer`).
        convo: the conversation (the summary; the outcome for the model).
        llm: the model that writes a warm transfer's summary.
        settings: the call's pipeline settings.
        hold: puts the caller on hold (True) or takes them off it (False).
        music: plays a WAV under the hold (None: stops it).
        log: the call's logger.
    """

    def __init__(
        self,
        ports: CallPorts,
        call: CallControl,
        convo: Conversation,
        llm: LlmBackend,
        settings: PipelineSettings,
        hold: Callable[[bool], None],
        music: Callable[[str | None], None],
        log: Any,
    ) -> None:
        self._ports = ports
        self._call = call
        self._convo = convo
        self._llm = llm
        self._settings = settings
        self._hold = hold
        self._music = music
        self._log = log
        #: Where the transfer in progress goes (None: none is).
        self.dest: str | None = None
        self._warm: Transfer | None = None

    def start(self, dest: str, warm: Transfer | None = None) -> None:
        """Transfer the caller to `dest` (warm: hold, summarise, dial, brief, join)."""
        self._ports.note("transfer", dest=dest, warm=warm is not None)
        self._log.info("transfer", dest=dest, warm=warm is not None)
        self.dest = dest
        if warm is None:
            self._call.transfer(dest)
            self._ports.arm("transfer", TRANSFER_TIMEOUT)
            return
        self._warm = warm
        self._hold(True)
        if warm.music:
            self._music(warm.music)
        self._ports.arm("transfer", TRANSFER_TIMEOUT + WARM_TRANSFER_EXTRA)
        self._ports.spawn(self._brief(dest, warm))

    async def _brief(self, dest: str, warm: Transfer) -> None:
        summary = warm.summary or await handoff_summary(
            self._llm,
            self._convo,
            timeout=self._settings.llm.first_token_timeout + 5,
            ask_model=self._settings.llm.backend != "scripted",
        )
        self._ports.post(ev.HandoffBriefed(dest, summary))

    def briefed(self, event: ev.HandoffBriefed) -> None:
        """The summary is ready: call the target, who hears it before the join."""
        if self._warm is None or self.dest != event.dest:
            return
        self._ports.note("handoff_summary", dest=event.dest, summary=event.summary)
        self._call.transfer(event.dest, whisper=event.summary)

    def finished(self, event: ev.TransferResult) -> str | None:
        """The outcome: the caller is off hold, the model is told (on the tool that
        asked); the transfer's destination, or None when none was under way."""
        self._ports.disarm("transfer")
        dest, self.dest = self.dest, None
        if dest is None:
            return None
        if self._warm is not None:
            self._warm = None
            self._music(None)
            self._hold(False)
        how = "succeeded" if event.ok else f"failed: {event.status} {event.reason}"
        self._convo.tool_outcome(f"transfer to {dest} {how}")
        return dest
