"""Rewrite the digits v5/v8 exports into ultralytics' single-tensor layout (same weights, no NMS):

    python examples/digits/to_ultralytics.py examples/digits/models/digits_v8.onnx \
        examples/digits/models/digits_v8_ultralytics.onnx                   # (1, 4 + C, N), as YOLOv8/v11
    python examples/digits/to_ultralytics.py examples/digits/models/digits_v5_raw.onnx \
        examples/digits/models/digits_v5_ultralytics.onnx --anchors 8,13,...  # (1, N, 5 + C), as YOLOv5

v8: from the decoded export (boxes x1 y1 x2 y2, scores): output0 = transpose(cat(cx, cy, w, h, scores)), what
`yolo export format=onnx` writes. v5: from the raw-head export, YOLOv5's Detect decoding (snnc.compiler.heads
with kind yolov5) up to cat(cx, cy, w, h, sigmoid(obj), sigmoid(cls)) per candidate, what YOLOv5's export.py
writes. train_modern.py calls `convert` after its other exports.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from snnc.compiler.heads import HeadSpec, attach_head, parse_anchors


def _finish(model: onnx.ModelProto, nodes: list, inits: list, shape: list[int]) -> onnx.ModelProto:
    out = onnx.ModelProto()
    out.CopyFrom(model)
    out.graph.node.extend(nodes)
    out.graph.initializer.extend(inits)
    del out.graph.output[:]
    out.graph.output.append(helper.make_tensor_value_info("output0", TensorProto.FLOAT, shape))
    out = onnx.shape_inference.infer_shapes(out)
    onnx.checker.check_model(out)
    return out


def v8_output(decoded: onnx.ModelProto) -> onnx.ModelProto:
    """boxes (1, N, 4) x1y1x2y2 + scores (1, N, C) -> output0 (1, 4 + C, N) = cx cy w h, class scores."""
    m = onnx.shape_inference.infer_shapes(decoded)
    n, c = [d.dim_value for d in m.graph.output[1].type.tensor_type.shape.dim][1:]
    half = numpy_helper.from_array(np.array(0.5, np.float32), "u.half")
    cut = [numpy_helper.from_array(np.array(v, np.int64), f"u.{k}") for k, v in
           (("lo", [0]), ("mid", [2]), ("hi", [4]), ("axis", [2]))]
    nodes = [helper.make_node("Slice", ["boxes", "u.lo", "u.mid", "u.axis"], ["u_x1y1"], name="u_x1y1"),
             helper.make_node("Slice", ["boxes", "u.mid", "u.hi", "u.axis"], ["u_x2y2"], name="u_x2y2"),
             helper.make_node("Add", ["u_x1y1", "u_x2y2"], ["u_sum"], name="u_sum"),
             helper.make_node("Mul", ["u_sum", "u.half"], ["u_cxcy"], name="u_cxcy"),
             helper.make_node("Sub", ["u_x2y2", "u_x1y1"], ["u_wh"], name="u_wh"),
             helper.make_node("Concat", ["u_cxcy", "u_wh", "scores"], ["u_cat"], name="u_cat", axis=2),
             helper.make_node("Transpose", ["u_cat"], ["output0"], name="u_transpose", perm=[0, 2, 1])]
    return _finish(decoded, nodes, [half] + cut, [1, 4 + c, n])


def v5_output(raw: onnx.ModelProto, anchors: list[float]) -> onnx.ModelProto:
    """Raw heads -> output0 (1, N, 5 + C) = cx cy w h, sigmoid(obj), sigmoid(cls) (YOLOv5 box coding)."""
    m = attach_head(raw, HeadSpec("yolov5", tuple(anchors)))
    keep = {"boxes", "scores"}
    heads = sorted({n.name[len("decode_"):].split("_")[0] for n in m.graph.node if n.name.startswith("decode_")},
                   key=int)
    nodes = [n for n in m.graph.node if not (set(n.output) & keep)]
    del m.graph.node[:]
    m.graph.node.extend(nodes)
    parts = []
    for k in heads:
        p = f"decode_{k}"
        m.graph.node.append(helper.make_node("Concat", [f"{p}_xy", f"{p}_wh", f"{p}_objectness", f"{p}_class_prob"],
                                             [f"{p}_out"], name=f"{p}_out", axis=2))
        parts.append(f"{p}_out")
    n, c = [d.dim_value for d in m.graph.output[1].type.tensor_type.shape.dim][1:]
    return _finish(m, [helper.make_node("Concat", parts, ["output0"], name="output0", axis=1)], [], [1, n, 5 + c])


def convert(src: Path, dst: Path, anchors: list[float] | None = None) -> None:
    """v5 (anchors given, a raw-head export) or v8 (a decoded export) into the single-tensor layout."""
    model = onnx.load(str(src))
    out = v5_output(model, anchors) if anchors else v8_output(model)
    out.producer_name = model.producer_name
    onnx.save(out, str(dst))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("source", type=Path, help="v8: the decoded export; v5: the raw-head export (with --anchors)")
    ap.add_argument("output", type=Path)
    ap.add_argument("--anchors", help="v5: the anchors w,h,... smallest stride first")
    args = ap.parse_args(argv)
    convert(args.source, args.output, parse_anchors(args.anchors) if args.anchors else None)
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
