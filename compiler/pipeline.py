"""The pass manager: one ordered default pipeline; --passes / --skip filter that list, never a second copy."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Sequence

import onnx
import onnx_graphsurgeon as gs

import snnc.passes  # noqa: F401  (importing the package registers the built-in passes)
from snnc.compiler.graph import check_model, export_model, import_graph, infer_shapes
from snnc.compiler.registry import PassContext, get_pass
from snnc.ir.options import CompileOptions, compile_options

log = logging.getLogger(__name__)

DEFAULT_PIPELINE = (
    "fold_batchnorm",
    "upsample_to_deconv",
    "channel_slice",
    "residual_add",
    "maxpool_to_strided_conv",
    "split_leaky_relu",
    "fold_linear",
    "activations_to_neurons",
    "channel_norm",
    "calibrate_to_T",
)
# Passes an option turns off: --leaky ibt / signed keep LeakyReLU for activations_to_neurons' signed neurons.
# calibrate_to_T runs only for a --target-T.
OPTION_SKIPS = {("leaky", "ibt"): ("split_leaky_relu",), ("leaky", "signed"): ("split_leaky_relu",),
                ("leaky", "graded"): ("split_leaky_relu",),
                ("target_T", None): ("calibrate_to_T",)}


def select_passes(options: CompileOptions | None = None) -> list[str]:
    """The pipeline to run: `options.passes` (default: the whole pipeline, in order) minus `options.skip` and
    the passes an option turns off."""
    options = options or CompileOptions()
    for name in list(options.passes or []) + list(options.skip):
        get_pass(name)  # unknown names fail here, with the list of known ones
    chosen = list(DEFAULT_PIPELINE) if options.passes is None else list(options.passes)
    skip = set(options.skip)
    for (field_name, value), names in OPTION_SKIPS.items():
        if getattr(options, field_name) == value:
            skip.update(names)
    return [p for p in chosen if p not in skip]


def run_passes(graph: gs.Graph, names: Sequence[str], ctx: PassContext) -> gs.Graph:
    """Run each pass (requires, run, ensures), validate the graph after it, log and record its effect."""
    for name in names:
        p = get_pass(name)()
        before = len(graph.nodes)
        p.requires(graph, ctx)
        graph = p.run(graph, ctx)
        graph.cleanup().toposort()
        p.ensures(graph)
        model = export_model(graph.copy())
        check_model(model, what=f"graph after pass {name}")
        graph = import_graph(infer_shapes(model))
        log.info("pass %-24s nodes %4d -> %4d, %d rewrites", name, before, len(graph.nodes), p.rewrites)
        ctx.stats.setdefault("passes", []).append({"name": name, "nodes_before": before,
                                                   "nodes_after": len(graph.nodes), "rewrites": int(p.rewrites)})
    return graph


@dataclass
class PassOutcome:
    model: onnx.ModelProto
    rewrites: int
    stats: dict[str, Any]


def run_pass(model: onnx.ModelProto, name: str, *, calibration=None, progress: bool = False,
             **options: Any) -> PassOutcome:
    """Run one pass on a ModelProto (tests and embedders): the rewritten model, its rewrite count, statistics.
    Keyword options are CompileOptions fields."""
    ctx = PassContext(options=compile_options(**options), calibration=calibration, progress=progress)
    graph = run_passes(import_graph(model), [name], ctx)
    return PassOutcome(export_model(graph, like=model), int(ctx.stats["passes"][-1]["rewrites"]), ctx.stats)


def apply_pass(model: onnx.ModelProto, name: str, **options: Any) -> onnx.ModelProto:
    """`run_pass(...).model`."""
    return run_pass(model, name, **options).model
