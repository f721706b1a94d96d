"""The recovery of failed stages: DESIGN's error table, carried out for one call.

Every failure reaches the actor as a typed `StageError` (classified where it
happened). `Failures` writes it to the call record and the log, and applies
its kind's recovery when the stage gave up: the caller is asked to repeat
(stt_failure), hears the trouble phrase (the model's retries and fallbacks
exhausted), is told why it is quiet (tool_timeout), or gets the configured
auth-failure flow (a message and hangup, a transfer, or another agent).
"""

from __future__ import annotations

from collections.abc import Callable

import structlog

from mediaserver.call import events as ev
from mediaserver.call.errors import RECOVERY, ErrorKind
from mediaserver.call.listener import Listener
from mediaserver.call.ports import CallPorts
from mediaserver.call.records import AgentReply
from mediaserver.call.replies import Replies
from mediaserver.pipeline.settings import PipelineSettings

__all__ = ["Failures"]


class Failures:
    """Records failures and recovers from them (see the module docstring).

    Args:
        ports: the actor's plumbing (the record).
        replies: the agent's replies (phrases are said through them).
        listener: the caller's side (a failed turn is dropped there).
        settings: the call's settings (phrases, the auth-failure flow).
        log: the call's logger.
        live: whether the call is still up.
        end_call: say goodbye (if any), then hang up, with a reason.
        hand_off: give the call to the named agent.
    """

    def __init__(
        self,
        ports: CallPorts,
        replies: Replies,
        listener: Listener,
        settings: PipelineSettings,
        log: structlog.typing.FilteringBoundLogger,
        live: Callable[[], bool],
        end_call: Callable[[str | None, str], None],
        hand_off: Callable[[str], None],
    ) -> None:
        self._ports = ports
        self._replies = replies
        self._listener = listener
        self._settings = settings
        self._log = log
        self._live = live
        self._end_call = end_call
        self._hand_off = hand_off

    def error(self, event: ev.StageError) -> None:
        """Record a classified failure and apply its kind's recovery."""
        kind = event.kind
        replies = self._replies
        reply = replies.of(event.reply) if event.reply is not None else None
        recovery = event.recovery
        if event.final and not recovery:
            recovery = self._final(kind, event, reply)
        if reply is not None and event.unsaid is not None:
            reply.unsaid.append(event.unsaid)
        fields = {"kind": kind.value, "stage": event.stage, "error": event.error}
        self._ports.note("error", **fields, recovery=recovery)
        self._log.warning("stage_error", **fields, recovery=recovery)
        if kind is ErrorKind.TOOL_TIMEOUT and reply is not None and self._live():
            # Tell the caller why it is quiet; the tool is then retried or skipped.
            replies.speak_into(reply, self._settings.recovery.tool_timeout_phrase + " ")

    def _final(self, kind: ErrorKind, event: ev.StageError, reply: AgentReply | None) -> str:
        """Carry out the recovery of a stage that gave up; say what was done."""
        if kind is ErrorKind.STT_FAILURE:
            if event.turn is None or not self._listener.drop(event.turn):
                return "turn already over"
            self._replies.say(self._settings.turn.not_understood)
            return RECOVERY[kind]
        if kind is ErrorKind.AUTH_FAILURE:
            if reply is not None:
                self._replies.cancel()
            return self._auth_failure()
        if reply is None:
            return "reply already over"
        if event.stage == "llm":
            self._replies.say(self._settings.recovery.trouble_phrase)
            return "retries and fallbacks exhausted: trouble phrase said"
        return RECOVERY[kind]

    def _auth_failure(self) -> str:
        """The configured flow for refused credentials: a message and hangup, a
        transfer, or another agent."""
        flow = self._settings.recovery.auth_failure
        if flow.action == "agent" and flow.agent:
            self._hand_off(flow.agent)
            return f"handed to agent {flow.agent}"
        if flow.action == "transfer" and flow.target:
            reply = self._replies.say(flow.message)
            reply.then_transfer = flow.target
            return f"message, then transfer to {flow.target}"
        self._end_call(flow.message, "auth failure")
        return "message, then hangup"
