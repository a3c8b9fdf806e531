"""Pass registry: passes are classes registered by name; every compile makes fresh instances (no shared state)."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import onnx_graphsurgeon as gs

from snnc.ir.errors import SnncError
from snnc.ir.options import CompileOptions

log = logging.getLogger(__name__)


@dataclass
class PassContext:
    """Options and data a pass may read, and a place to leave statistics for the file's provenance."""

    options: CompileOptions = field(default_factory=CompileOptions)
    calibration: np.ndarray | None = None  # (N, C, H, W) calibration inputs, preprocessed
    progress: bool = True
    stats: dict[str, Any] = field(default_factory=dict)


class Pass:
    """A graph -> graph rewrite with one job. Subclasses set name, summary, exact and implement run().

    The pass manager calls `requires` (preconditions; raise SnncError naming what is missing), `run` (which sets
    `self.rewrites`, the number of rewrites it made: recorded in the provenance and asserted by the golden
    tests) and `ensures` (postconditions on the result), on a fresh instance per compile.
    """

    name: str = ""
    summary: str = ""
    exact: bool = True  # the rewritten graph computes the same function (checked against onnxruntime in tests)
    rewrites: int = 0

    def requires(self, graph: gs.Graph, ctx: PassContext) -> None:
        """Precondition checked before run()."""

    def run(self, graph: gs.Graph, ctx: PassContext) -> gs.Graph:
        raise NotImplementedError

    def ensures(self, graph: gs.Graph) -> None:
        """Postcondition checked by the pass manager after run(); raise SnncError/AssertionError to refuse."""


_PASSES: dict[str, type[Pass]] = {}


def register_pass(cls: type[Pass]) -> type[Pass]:
    if not cls.name:
        raise ValueError(f"{cls.__name__} has no name")
    if cls.name in _PASSES and _PASSES[cls.name] is not cls:
        raise ValueError(f"pass {cls.name!r} registered twice")
    _PASSES[cls.name] = cls
    return cls


def registered_passes() -> dict[str, type[Pass]]:
    """The passes registered so far (`snnc.compiler.pipeline` imports the built-in ones)."""
    return dict(_PASSES)


def get_pass(name: str) -> Callable[[], Pass]:
    passes = registered_passes()
    if name not in passes:
        raise SnncError(f"unknown pass {name!r}; `snnc passes` lists them: {', '.join(sorted(passes))}")
    return passes[name]
