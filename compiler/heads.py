"""YOLO head decoding for raw-head exports: attach box decoding (and optionally NMS) to an ONNX model.

Most PyTorch exports of a YOLO end at the raw 1x1 head convolutions, (1, A*(5+C), H/s, W/s) each, and decode in
Python. `attach_head` appends the standard anchor-based decoding as plain ONNX ops, so snnc's split puts it on
the host like any decoded graph:

    yolo    (YOLOv3, Darknet)  xy = (sigmoid(t_xy) + grid) * stride          wh = exp(t_wh) * anchor
    yolov5  (YOLOv5/v7)        xy = (2 sigmoid(t_xy) - 0.5 + grid) * stride  wh = (2 sigmoid(t_wh))^2 * anchor
    both:   scores = sigmoid(t_obj) * sigmoid(t_cls)

Outputs `boxes` (1, N, 4) x1 y1 x2 y2 in input pixels and `scores` (1, N, C), N = sum over heads of A*H*W in
(head, anchor, y, x) order: the same layout and node types as snnc's Darknet reader writes, so the detections
of a raw-head export plus `--head yolo` equal those of the decoded export of the same weights.

Anchors are (w, h) pairs in input pixels, split evenly over the heads in the order given: the first group goes
to the head with the smallest stride (largest grid) and the last, largest, group to the largest stride, as in
the Darknet and YOLOv5 configs. A Darknet cfg gives the grouping explicitly ([yolo] anchors + mask).

`attach_single_output` handles ultralytics' one-tensor exports instead (`yolov8-output`: (1, 4 + C, N);
`yolov5-output`: (1, N, 5 + C); boxes already decoded, no anchors), `single_output_kind` recognises them by
their `output0`. `append_nms` turns a boxes/scores model into the "NMS in the graph" export form (ONNX
NonMaxSuppression).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from snnc.ir.errors import SnncError

log = logging.getLogger(__name__)

RAW_KINDS = ("yolo", "yolov5")
# one tensor of decoded candidates, no NMS: ultralytics' `yolo export format=onnx` (v8/v11: (1, 4 + C, N),
# cx cy w h then class scores) and YOLOv5's export.py ((1, N, 5 + C), cx cy w h, objectness, class scores)
SINGLE_KINDS = ("yolov8-output", "yolov5-output")
HEAD_KINDS = RAW_KINDS + SINGLE_KINDS


@dataclass(frozen=True)
class HeadSpec:
    """How to decode raw YOLO heads: a compile choice about the model's outputs, not a conversion option.

    kind     "yolo" (YOLOv3 coding) or "yolov5" (raw heads, anchors needed), or "yolov8-output" /
             "yolov5-output" (one decoded candidate tensor, no anchors: `attach_single_output`)
    anchors  per head in stride order (smallest stride first): [[(w, h), ...], ...] in input pixels
             (or a flat list of w, h values, split evenly over the heads)
    names    class names (also stored as the model's class names); their count must match the channels
    """

    kind: str = "yolo"
    anchors: tuple = ()
    names: tuple[str, ...] | None = None
    grouped: bool = field(default=False)  # anchors already given per head (Darknet cfg)

    def __post_init__(self) -> None:
        if self.kind not in HEAD_KINDS:
            raise SnncError(f"--head {self.kind!r}: expected one of {', '.join(HEAD_KINDS)}")


def parse_anchors(text: str) -> list[float]:
    """'10,14,23,27,...' -> [10.0, 14.0, ...]: an even number of positive values (w, h pairs)."""
    try:
        values = [float(v) for v in text.replace(" ", "").split(",") if v]
    except ValueError:
        raise SnncError(f"--anchors {text!r}: expected comma-separated numbers w1,h1,w2,h2,...") from None
    if not values or len(values) % 2 or any(not np.isfinite(v) or v <= 0 for v in values):
        raise SnncError(f"--anchors {text!r}: expected an even number of positive values (w,h pairs)")
    return values


def read_names(path: str | Path) -> list[str]:
    """A .names file: one class name per line (blank lines ignored)."""
    path = Path(path)
    if not path.is_file():
        raise SnncError(f"--names {path}: no such file")
    names = [ln.strip() for ln in path.read_text(encoding="utf-8", errors="replace").splitlines() if ln.strip()]
    if not names:
        raise SnncError(f"--names {path}: no class names in the file")
    return names


def anchors_from_cfg(path: str | Path) -> list[list[tuple[float, float]]]:
    """Anchors per [yolo] layer of a Darknet cfg (its mask picks them), ordered smallest anchors first."""
    from snnc.compiler.darknet import parse_cfg

    groups = []
    for sec in parse_cfg(path):
        if sec.kind != "yolo":
            continue
        where = f"{path}: [yolo] at line {sec.line}"
        try:
            values = [float(v) for v in sec.options.get("anchors", "").split(",") if v]
            pairs = [(values[j], values[j + 1]) for j in range(0, len(values) - 1, 2)]
            mask = [int(m) for m in sec.options.get("mask", ",".join(str(i) for i in range(len(pairs)))).split(",")
                    if m]
        except ValueError:
            raise SnncError(f"{where}: anchors= and mask= must be comma-separated numbers") from None
        if not pairs or len(values) % 2 or any(not 0 <= m < len(pairs) for m in mask):
            raise SnncError(f"{where}: needs anchors= (w,h pairs) and a mask= indexing them")
        groups.append([pairs[m] for m in mask])
    if not groups:
        raise SnncError(f"{path}: no [yolo] layer, so no anchors to read")
    return sorted(groups, key=lambda g: float(np.mean([w * h for w, h in g])))


def _group(spec: HeadSpec, n_heads: int) -> list[list[tuple[float, float]]]:
    if spec.grouped:
        groups = [list(map(tuple, g)) for g in spec.anchors]
        if len(groups) != n_heads:
            raise SnncError(f"the anchors name {len(groups)} heads but the model has {n_heads} raw head outputs")
        return groups
    flat = [float(v) for v in spec.anchors]
    pairs = [(flat[j], flat[j + 1]) for j in range(0, len(flat) - 1, 2)]
    if not pairs or len(pairs) % n_heads:
        raise SnncError(f"{len(pairs)} anchors do not split evenly over the model's {n_heads} raw head outputs; "
                        f"give {n_heads} x (anchors per head) w,h pairs")
    a = len(pairs) // n_heads
    return [pairs[k * a:(k + 1) * a] for k in range(n_heads)]


def _shape(model: onnx.ModelProto, name: str) -> list[int] | None:
    for vi in list(model.graph.output) + list(model.graph.value_info):
        if vi.name == name:
            dims = vi.type.tensor_type.shape.dim
            if dims and all(d.HasField("dim_value") for d in dims):
                return [int(d.dim_value) for d in dims]
    return None


class _NewNodes:
    """Nodes and initializers to append to a model, each named by its one output."""

    def __init__(self) -> None:
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []

    def const(self, name: str, value: np.ndarray) -> str:
        self.inits.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    def node(self, op: str, inputs: list[str], name: str, **attrs) -> str:
        self.nodes.append(helper.make_node(op, inputs, [name], name=name, **attrs))
        return name


def _with_boxes_and_scores(model: onnx.ModelProto, nodes: list, inits: list, n: int, classes: int,
                           names: tuple[str, ...] | None) -> onnx.ModelProto:
    """`model` plus the decoding `nodes`, its outputs replaced by boxes (1, n, 4) and scores (1, n, classes)."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    out.graph.node.extend(nodes)
    out.graph.initializer.extend(inits)
    del out.graph.output[:]
    out.graph.output.extend([helper.make_tensor_value_info("boxes", TensorProto.FLOAT, [1, n, 4]),
                             helper.make_tensor_value_info("scores", TensorProto.FLOAT, [1, n, classes])])
    if names is not None:
        kept = [p for p in out.metadata_props if p.key != "snnc.class_names"]
        del out.metadata_props[:]
        out.metadata_props.extend(kept)
        out.metadata_props.add(key="snnc.class_names", value=json.dumps(list(names)))
    return out


def attach_head(model: onnx.ModelProto, spec: HeadSpec, source: str = "model") -> onnx.ModelProto:
    """The model with its raw head outputs decoded into `boxes` and `scores` (see the module docstring).

    `model` has static shapes (snnc's frontend output); every graph output must be a raw head
    (1, A*(5+C), H, W) made by a convolution. SnncError for anything else, naming the mismatch.
    """
    if spec.kind in SINGLE_KINDS:
        return attach_single_output(model, spec, source)
    model = onnx.shape_inference.infer_shapes(model)
    inp = model.graph.input[0]
    in_h, in_w = [int(d.dim_value) for d in inp.type.tensor_type.shape.dim][2:]
    made_by = {o: n for n in model.graph.node for o in n.output}
    heads = []
    for out in model.graph.output:
        node = made_by.get(out.name)
        shape = _shape(model, out.name)
        if node is None or node.op_type != "Conv" or shape is None or len(shape) != 4:
            what = node.op_type if node is not None else "the input"
            raise SnncError(f"{source}: output '{out.name}' is not a raw head convolution (made by {what}, shape "
                            f"{shape}); --head needs a model that ends at the raw head convolutions (drop --head "
                            "for models that decode in the graph)")
        heads.append((out.name, shape))
    # Pair anchor groups (smallest first) with heads by stride (smallest stride first).
    order = sorted(range(len(heads)), key=lambda k: in_h / heads[k][1][2])
    groups = _group(spec, len(heads))
    anchors_of = {k: groups[rank] for rank, k in enumerate(order)}
    classes = None
    for k, (name, (_, c, h, w)) in enumerate(heads):
        a = len(anchors_of[k])
        if c % a or c // a < 6:
            raise SnncError(f"{source}: head '{name}' has {c} channels, not {a} anchors x (5 + classes); check "
                            "--anchors / --darknet-cfg against the model")
        n_cls = c // a - 5
        if spec.names is not None and n_cls != len(spec.names):
            raise SnncError(f"{source}: head '{name}' has {c} channels = {a} anchors x (5 + {n_cls} classes) but "
                            f"--names lists {len(spec.names)} classes; expected {a * (5 + len(spec.names))} channels")
        if classes is not None and n_cls != classes:
            raise SnncError(f"{source}: heads disagree on the class count ({classes} vs {n_cls} in '{name}')")
        classes = n_cls
    new = _NewNodes()
    nodes, inits, const, node = new.nodes, new.inits, new.const, new.node

    boxes, scores = [], []
    for k, (name, (_, c, h, w)) in enumerate(heads):
        p, anchors = f"decode_{k}", anchors_of[k]
        a, no, n = len(anchors), classes + 5, len(anchors) * h * w
        x = node("Reshape", [name, const(f"{p}.shape0", np.array([1, a, no, h * w], np.int64))], f"{p}_reshape0")
        x = node("Transpose", [x], f"{p}_transpose", perm=[0, 1, 3, 2])
        x = node("Reshape", [x, const(f"{p}.shape1", np.array([1, n, no], np.int64))], f"{p}_reshape1")

        def part(tag: str, lo: int, hi: int) -> str:
            return node("Slice", [x, const(f"{p}.{tag}.starts", np.array([lo], np.int64)),
                                  const(f"{p}.{tag}.ends", np.array([hi], np.int64)),
                                  const(f"{p}.{tag}.axes", np.array([2], np.int64))], f"{p}_{tag}")

        txy, twh, tobj, tcls = part("txy", 0, 2), part("twh", 2, 4), part("tobj", 4, 5), part("tcls", 5, no)
        gy, gx = np.meshgrid(np.arange(h, dtype=np.float32), np.arange(w, dtype=np.float32), indexing="ij")
        grid = np.broadcast_to(np.stack([gx.ravel(), gy.ravel()], -1), (a, h * w, 2)).reshape(1, n, 2)
        anchor = np.repeat(np.asarray(anchors, np.float32), h * w, axis=0).reshape(1, n, 2)
        stride = np.array([in_w / w, in_h / h], np.float32)
        xy = node("Sigmoid", [txy], f"{p}_sigmoid_xy")
        if spec.kind == "yolov5":
            xy = node("Mul", [xy, const(f"{p}.two_xy", np.array(2.0, np.float32))], f"{p}_scale_xy")
            xy = node("Add", [xy, const(f"{p}.shift_xy", np.array(-0.5, np.float32))], f"{p}_shift_xy")
            wh = node("Sigmoid", [twh], f"{p}_sigmoid_wh")
            wh = node("Mul", [wh, const(f"{p}.two_wh", np.array(2.0, np.float32))], f"{p}_scale_wh")
            wh = node("Mul", [wh, wh], f"{p}_square_wh")
        else:
            wh = node("Exp", [twh], f"{p}_exp_wh")
        xy = node("Add", [xy, const(f"{p}.grid", grid.astype(np.float32))], f"{p}_grid")
        xy = node("Mul", [xy, const(f"{p}.stride", stride)], f"{p}_xy")
        wh = node("Mul", [wh, const(f"{p}.anchors", anchor)], f"{p}_wh")
        half = node("Mul", [wh, const(f"{p}.half", np.array(0.5, np.float32))], f"{p}_half_wh")
        x1y1 = node("Sub", [xy, half], f"{p}_x1y1")
        x2y2 = node("Add", [xy, half], f"{p}_x2y2")
        boxes.append(node("Concat", [x1y1, x2y2], f"{p}_boxes", axis=2))
        obj = node("Sigmoid", [tobj], f"{p}_objectness")
        cls = node("Sigmoid", [tcls], f"{p}_class_prob")
        scores.append(node("Mul", [obj, cls], f"{p}_scores"))
    total = sum(len(anchors_of[k]) * s[2] * s[3] for k, (_, s) in enumerate(heads))
    node("Concat", boxes, "boxes", axis=1)
    node("Concat", scores, "scores", axis=1)

    out = _with_boxes_and_scores(model, nodes, inits, total, classes, spec.names)
    log.info("attached %s decoding to %d heads (%d classes, anchors %s)", spec.kind, len(heads), classes,
             [anchors_of[k] for k in range(len(heads))])
    return onnx.shape_inference.infer_shapes(out)


def single_output_kind(model: onnx.ModelProto) -> str | None:
    """The ultralytics layout of a model whose one output is `output0` of shape (1, a, b), or None: (1, 4 + C, N)
    when a < b (v8/v11, boxes along the channels), (1, N, 5 + C) when a > b (v5). N, the candidates, is far
    larger than the channels in any real detector; --head names the layout where this guess is not wanted."""
    outs = list(model.graph.output)
    if len(outs) != 1 or outs[0].name != "output0":
        return None
    shape = _shape(onnx.shape_inference.infer_shapes(model), "output0")
    if shape is None or len(shape) != 3 or shape[0] != 1 or shape[1] == shape[2]:
        return None
    return "yolov8-output" if shape[1] < shape[2] else "yolov5-output"


def _rename_tensors(model: onnx.ModelProto, names: set[str]) -> None:
    """Rename inner tensors called one of `names` (in place) to free those names for new outputs."""
    taken = {t for n in model.graph.node for t in list(n.input) + list(n.output)}
    new = {t: f"{t}_inner" for t in names & taken}
    for n in model.graph.node:
        n.input[:] = [new.get(t, t) for t in n.input]
        n.output[:] = [new.get(t, t) for t in n.output]
    for vi in model.graph.value_info:
        vi.name = new.get(vi.name, vi.name)


def attach_single_output(model: onnx.ModelProto, spec: HeadSpec, source: str = "model") -> onnx.ModelProto:
    """The model with its one candidate tensor split into `boxes` (1, N, 4) x1 y1 x2 y2 and `scores` (1, N, C):

        yolov8-output  (1, 4 + C, N): transposed, cx cy w h, then class scores (already sigmoid)
        yolov5-output  (1, N, 5 + C): cx cy w h, objectness, class scores; scores = objectness x class

    snnc's host then thresholds and runs NMS (`--score-thr`, `--iou-thr`) as for any decoded model."""
    model = onnx.shape_inference.infer_shapes(model)
    outs = list(model.graph.output)
    shape = _shape(model, outs[0].name) if len(outs) == 1 else None
    v8 = spec.kind == "yolov8-output"
    want = "(1, 4 + classes, N)" if v8 else "(1, N, 5 + classes)"
    if shape is None or len(shape) != 3 or shape[0] != 1:
        raise SnncError(f"{source}: --head {spec.kind} needs one output of shape {want}; the model has "
                        f"{[o.name for o in outs]} (shape {shape})")
    no = shape[1] if v8 else shape[2]
    n = shape[2] if v8 else shape[1]
    classes = no - (4 if v8 else 5)
    if n < no:  # fewer candidates than values per candidate: the tensor is the other layout
        other = "yolov5-output" if v8 else "yolov8-output"
        raise SnncError(f"{source}: output '{outs[0].name}' {shape} read as {want} has {n} candidates of {no} values; "
                        f"it looks like the other layout: --head {other}")
    if classes < 1:
        raise SnncError(f"{source}: output '{outs[0].name}' {shape} is not {want} (no class scores); check --head")
    if spec.names is not None and classes != len(spec.names):
        raise SnncError(f"{source}: output '{outs[0].name}' {shape} holds {classes} classes but --names lists "
                        f"{len(spec.names)}")
    new = _NewNodes()
    nodes, inits, const, node = new.nodes, new.inits, new.const, new.node

    x = outs[0].name
    _rename_tensors(model, {"boxes", "scores"})  # inner tensors of those names would clash with the outputs
    if v8:
        x = node("Transpose", [x], "single_transpose", perm=[0, 2, 1])  # (1, N, 4 + C)

    def part(tag: str, lo: int, hi: int, name: str | None = None) -> str:
        return node("Slice", [x, const(f"single.{tag}.starts", np.array([lo], np.int64)),
                              const(f"single.{tag}.ends", np.array([hi], np.int64)),
                              const(f"single.{tag}.axes", np.array([2], np.int64))], name or f"single_{tag}")

    xy, wh = part("xy", 0, 2), part("wh", 2, 4)
    half = node("Mul", [wh, const("single.half", np.array(0.5, np.float32))], "single_half_wh")
    x1y1 = node("Sub", [xy, half], "single_x1y1")
    x2y2 = node("Add", [xy, half], "single_x2y2")
    node("Concat", [x1y1, x2y2], "boxes", axis=2)
    if v8:
        part("cls", 4, no, "scores")
    else:
        node("Mul", [part("obj", 4, 5), part("cls", 5, no)], "scores")
    out = _with_boxes_and_scores(model, nodes, inits, n, classes, spec.names)
    log.info("attached the %s layout: %d candidates, %d classes", spec.kind, n, classes)
    return onnx.shape_inference.infer_shapes(out)


def append_nms(model: onnx.ModelProto, iou_thr: float = 0.45, score_thr: float = 0.25,
               max_per_class: int = 100) -> onnx.ModelProto:
    """A boxes/scores model -> the NMS-in-graph export form: ONNX NonMaxSuppression (per class) and Gathers with
    the outputs `det_boxes` (1, K, 4) x1 y1 x2 y2, `det_scores` (1, K) and `det_classes` (1, K) (float class
    index), K the kept (box, class) pairs; K varies per image."""
    names = [o.name for o in model.graph.output]
    if names != ["boxes", "scores"]:
        raise SnncError(f"append_nms needs a model with outputs boxes, scores; this one has {names}")
    new = _NewNodes()
    nodes, inits, const, node = new.nodes, new.inits, new.const, new.node

    st = node("Transpose", ["scores"], "nms_scores_t", perm=[0, 2, 1])  # (1, C, N)
    sel = node("NonMaxSuppression", ["boxes", st, const("nms.max", np.array([max_per_class], np.int64)),
                                     const("nms.iou", np.array([iou_thr], np.float32)),
                                     const("nms.score", np.array([score_thr], np.float32))], "nms_selected")
    cls = node("Gather", [sel, const("nms.col1", np.array(1, np.int64))], "nms_class_idx", axis=1)  # (K,)
    box = node("Gather", [sel, const("nms.col2", np.array(2, np.int64))], "nms_box_idx", axis=1)
    b0 = node("Squeeze", ["boxes", const("nms.axis0", np.array([0], np.int64))], "nms_boxes0")  # (N, 4)
    kb = node("Gather", [b0, box], "nms_det_boxes", axis=0)  # (K, 4)
    node("Unsqueeze", [kb, "nms.axis0"], "det_boxes")
    ks = node("GatherND", [st, sel], "nms_det_scores")  # (K,)
    node("Unsqueeze", [ks, "nms.axis0"], "det_scores")
    kc = node("Cast", [cls], "nms_det_classes", to=TensorProto.FLOAT)
    node("Unsqueeze", [kc, "nms.axis0"], "det_classes")
    out = onnx.ModelProto()
    out.CopyFrom(model)
    out.graph.node.extend(nodes)
    out.graph.initializer.extend(inits)
    del out.graph.output[:]
    out.graph.output.extend([helper.make_tensor_value_info("det_boxes", TensorProto.FLOAT, [1, "K", 4]),
                             helper.make_tensor_value_info("det_scores", TensorProto.FLOAT, [1, "K"]),
                             helper.make_tensor_value_info("det_classes", TensorProto.FLOAT, [1, "K"])])
    onnx.checker.check_model(out)
    return out


def head_spec(kind: str | None, anchors: str | None = None, darknet_cfg: str | Path | None = None,
              names: str | Path | None = None) -> HeadSpec | None:
    """The HeadSpec the command line asks for (--head, --anchors, --darknet-cfg, --names), or None."""
    if kind is None:
        if anchors or darknet_cfg or names:
            raise SnncError("--anchors / --darknet-cfg / --names need --head (yolo, yolov5, yolov8-output or "
                            "yolov5-output)")
        return None
    class_names = tuple(read_names(names)) if names else None
    if kind in SINGLE_KINDS:
        if anchors or darknet_cfg:
            raise SnncError(f"--head {kind} takes no anchors: the model's output already holds decoded boxes")
        return HeadSpec(kind, (), class_names)
    if anchors and darknet_cfg:
        raise SnncError("give either --anchors or --darknet-cfg, not both")
    if not anchors and not darknet_cfg:
        raise SnncError(f"--head {kind} needs the anchors: --anchors w1,h1,w2,h2,... or --darknet-cfg FILE")
    if darknet_cfg:
        groups = tuple(tuple(g) for g in anchors_from_cfg(darknet_cfg))
        return HeadSpec(kind, groups, class_names, grouped=True)
    return HeadSpec(kind, tuple(parse_anchors(anchors)), class_names)


def describe(spec: HeadSpec) -> dict:
    """For the provenance record."""
    return {"kind": spec.kind, "anchors": [list(map(list, g)) for g in spec.anchors] if spec.grouped
            else list(spec.anchors), "names": None if spec.names is None else len(spec.names)}


__all__: Sequence[str] = ("HEAD_KINDS", "HeadSpec", "anchors_from_cfg", "append_nms", "attach_head",
                          "attach_single_output", "head_spec", "parse_anchors", "read_names", "single_output_kind")
