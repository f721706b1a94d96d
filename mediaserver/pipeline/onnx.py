"""Loading an ONNX model for onnxruntime on the CPU, with the errors users see."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import onnxruntime  # type: ignore[import-untyped]

from mediaserver.pipeline.errors import ModelLoadError

__all__ = ["cpu_session"]


def cpu_session(path: Path, what: str, threads: int = 1) -> Any:
    """An onnxruntime session for the model file at `path`.

    Args:
        path: the ONNX file.
        what: how errors name it, backend first ("silero: VAD model").
        threads: intra-op threads (throughput comes from batching calls, and
            other inference runs beside us: more threads mostly contend).

    Raises:
        ModelLoadError: the file is missing or onnxruntime cannot load it (one
            line naming `what` and the path).
    """
    if not path.is_file():
        raise ModelLoadError(f"{what} file not found: {path}")
    opts = onnxruntime.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    # Keep onnxruntime's own warnings off stderr; failures raise anyway.
    opts.log_severity_level = 3
    try:
        return onnxruntime.InferenceSession(
            str(path), sess_options=opts, providers=["CPUExecutionProvider"]
        )
    except Exception as exc:  # onnxruntime raises many unrelated types
        first = (str(exc).strip() or type(exc).__name__).splitlines()[0]
        backend, _, name = what.partition(": ")
        raise ModelLoadError(f"{backend}: cannot load {name} {path}: {first}") from exc
