"""The ten error kinds (DESIGN's taxonomy), where they are classified, and what
recovery each one gets.

A failure is classified once, at the boundary of the stage where it happened
(the STT task, the LLM stream, the TTS job, a tool, the transfer, the media
session, SIP transactions), and reported to the call actor as a typed
`StageError`. The actor applies the kind's recovery and writes the error, with
the stage and what the recovery did, to the call record.
"""

from __future__ import annotations

import enum

from mediaserver.pipeline.llm.base import LlmError, LlmTimeout


class ErrorKind(enum.StrEnum):
    """What went wrong, independent of which backend it was."""

    STT_FAILURE = "stt_failure"
    LLM_TIMEOUT = "llm_timeout"
    LLM_ERROR = "llm_error"
    TTS_FAILURE = "tts_failure"
    TOOL_TIMEOUT = "tool_timeout"
    TOOL_ERROR = "tool_error"
    TRANSFER_FAILURE = "transfer_failure"
    MEDIA_FAILURE = "media_failure"
    NETWORK_PARTITION = "network_partition"
    AUTH_FAILURE = "auth_failure"
    #: A bug of ours (an exception in the actor or a child task): not a kind of
    #: the taxonomy, recorded so it is seen.
    INTERNAL = "internal"


#: The recovery each kind gets (DESIGN's error table), as recorded.
RECOVERY: dict[ErrorKind, str] = {
    ErrorKind.STT_FAILURE: "recovery phrase: the caller is asked to repeat",
    ErrorKind.LLM_TIMEOUT: "retry, then the fallback model",
    ErrorKind.LLM_ERROR: "backoff retry, then the fallback model",
    ErrorKind.TTS_FAILURE: "fallback voice or backend",
    ErrorKind.TOOL_TIMEOUT: "caller told; retried or skipped as the tool says",
    ErrorKind.TOOL_ERROR: "error-specific recovery phrase",
    ErrorKind.TRANSFER_FAILURE: "caller told, conversation goes on",
    ErrorKind.MEDIA_FAILURE: "concealed, call goes on",
    ErrorKind.NETWORK_PARTITION: "graceful hangup, state captured",
    ErrorKind.AUTH_FAILURE: "configured auth-failure flow",
    ErrorKind.INTERNAL: "logged, call goes on",
}


def llm_error_kind(exc: LlmError) -> ErrorKind:
    """The kind of a model failure: a timeout, refused credentials (HTTP 401/403)
    or any other error."""
    if isinstance(exc, LlmTimeout):
        return ErrorKind.LLM_TIMEOUT
    return ErrorKind.AUTH_FAILURE if exc.status in (401, 403) else ErrorKind.LLM_ERROR
