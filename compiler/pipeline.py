"""The pass manager: one ordered default pipeline; --passes / --skip filter that list, never a second copy."""

from __future__ import annotations

import logging
from typing import Sequence

import onnx_graphsurgeon as gs

from .graph import check_model, export_model, import_graph, infer_shapes
from .registry import PassContext, get_pass

log = logging.getLogger(__name__)

# Option defaults shared by the passes, the API and the CLI. Chosen from measurements on the real yolov3-tiny
# (docs/results.md): percentile 99.9 with a handful of calibration photos clipped the heads so much that even the
# rate-limit ANN (T -> infinity) lost half of the ANN's detections; 99.99 kept all of them. V(0) = theta/2
# halves the worst-case quantization error of every neuron (Bu et al. 2022).
DEFAULT_OPTIONS = {"percentile": 99.99, "norm": "channel", "maxpool": "exact", "v_init": 0.5, "neuron": "memory"}

DEFAULT_PIPELINE = (
    "fold_batchnorm",
    "upsample_to_deconv",
    "maxpool_to_strided_conv",
    "split_leaky_relu",
    "activations_to_neurons",
    "channel_norm",
)


def select_passes(passes: Sequence[str] | None = None, skip: Sequence[str] = ()) -> list[str]:
    """The pipeline to run: `passes` in the default order (or as given for non-default ones), minus `skip`."""
    for name in list(passes or []) + list(skip):
        get_pass(name)  # unknown names fail here, with the list of known ones
    chosen = list(DEFAULT_PIPELINE) if passes is None else list(passes)
    return [p for p in chosen if p not in set(skip)]


def run_passes(graph: gs.Graph, names: Sequence[str], ctx: PassContext) -> gs.Graph:
    """Run each pass, validate the graph after it, log its effect (nodes before/after)."""
    for name in names:
        p = get_pass(name)()
        before = len(graph.nodes)
        graph = p.run(graph, ctx)
        graph.cleanup().toposort()
        p.ensures(graph)
        model = export_model(graph.copy())
        check_model(model, what=f"graph after pass {name}")
        graph = import_graph(infer_shapes(model))
        log.info("pass %-24s nodes %4d -> %4d", name, before, len(graph.nodes))
        ctx.stats.setdefault("passes", []).append({"name": name, "nodes_before": before,
                                                   "nodes_after": len(graph.nodes)})
    return graph


def apply_pass(model, name: str, **options):
    """Run one pass on a ModelProto and return the rewritten ModelProto (used by tests and embedders)."""
    ctx = PassContext(options={k: v for k, v in options.items() if k != "calibration"},
                      calibration=options.get("calibration"))
    graph = run_passes(import_graph(model), [name], ctx)
    return export_model(graph, like=model)
