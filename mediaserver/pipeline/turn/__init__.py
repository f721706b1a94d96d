"""End-of-turn detection from the caller's audio (Smart Turn v3), batched across calls."""

from mediaserver.pipeline.turn.smart_turn import (
    SmartTurnModel,
    TurnBatcher,
    TurnStats,
    default_model_path,
)

__all__ = ["SmartTurnModel", "TurnBatcher", "TurnStats", "default_model_path"]
