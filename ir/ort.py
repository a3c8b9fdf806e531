"""The one way snnc opens an onnxruntime session: CPU, graph optimizations off unless asked, errors as one line.

ORT's optimizer fuses a zero Pad into the following MaxPool, turning zero padding into -inf padding, so
every reference run uses the graph exactly as written (ORT_DISABLE_ALL).
"""

from __future__ import annotations

import os
import re
from typing import Any

from snnc.ir.errors import SnncError


def ort_error(exc: BaseException, limit: int = 240) -> str:
    """onnxruntime's exception text without its status prefix and C++ source location: the sentence a user reads."""
    text = " ".join(str(exc).split()) or exc.__class__.__name__
    text = re.sub(r"^\[ONNXRuntimeError\] : \d+ : \w+ : ", "", text)
    text = re.sub(r"/onnxruntime_src/\S+:\d+ .*?\)\s", "", text, count=1)
    return text[:limit]


# Threads of the sessions built without `threads` (None: onnxruntime's default, a spinning pool of every core).
# A Ray worker of `snnc eval --workers N` sets its share of the cores: N workers each starting pools of every core
# for the ANN and the host graph, spinning between calls, would take the cores from each other's simulations.
_DEFAULT_THREADS: int | None = None


def set_default_threads(threads: int | None) -> None:
    """Threads (and no spinning) for the sessions later built without `threads`; None: onnxruntime's default."""
    global _DEFAULT_THREADS
    _DEFAULT_THREADS = None if threads is None else max(1, int(threads))


def ort_session(model: Any, *, what: str = "the model", optimize: bool = False, threads: int | None = None,
                arena: bool = True, spinning: bool = True):
    """An onnxruntime CPU session for `model` (ModelProto, bytes or a path); SnncError naming `what` when
    onnxruntime cannot load it."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = (ort.GraphOptimizationLevel.ORT_ENABLE_ALL if optimize
                                     else ort.GraphOptimizationLevel.ORT_DISABLE_ALL)
    opts.log_severity_level = 4  # failures come back as exceptions, reworded: no log lines too
    if threads is None and _DEFAULT_THREADS is not None:
        threads, spinning = _DEFAULT_THREADS, False
    if threads is not None:
        opts.intra_op_num_threads = max(1, int(threads))
        opts.inter_op_num_threads = 1
    opts.enable_cpu_mem_arena = arena
    if not spinning:
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    src = model.SerializeToString() if hasattr(model, "SerializeToString") else (
        str(model) if isinstance(model, (str, os.PathLike)) else model)
    try:
        return ort.InferenceSession(src, opts, providers=["CPUExecutionProvider"])
    except MemoryError:
        raise SnncError(f"{what}: out of memory loading it in onnxruntime") from None
    except Exception as exc:  # onnxruntime raises its own exception types
        raise SnncError(f"{what}: onnxruntime cannot load it ({ort_error(exc)})") from None
