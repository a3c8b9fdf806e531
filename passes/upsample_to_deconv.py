"""upsample_to_deconv: nearest-neighbour Resize/Upsample by integer factors -> depthwise ConvTranspose. Exact.

Math: nearest upsampling by (kh, kw) copies x[c, i, j] to y[c, kh*i + a, kw*j + b] for 0 <= a < kh, 0 <= b < kw.
That is a ConvTranspose with group = C, kernel (kh, kw), stride (kh, kw), no padding, weights 1, no bias.

Preconditions: 4-D input, mode "nearest", scale 1 on N and C and a positive integer on H and W (from `scales`
or from `sizes` that are integer multiples of the input), and attributes (coordinate_transformation_mode,
nearest_mode) that really select source pixel floor(y / k): the pass checks this by running the node itself
in onnxruntime on an index ramp, so any attribute combination either converts exactly or is refused.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from snnc.ir.errors import UnsupportedOpError
from snnc.compiler.graph import const_value, make_const, node_label, run_model, tensor_shape, unique_name
from snnc.compiler.registry import Pass, PassContext, register_pass


def _factors(node: gs.Node) -> tuple[int, int]:
    x_shape = tensor_shape(node.inputs[0])
    if len(x_shape) != 4:
        raise UnsupportedOpError(f"{node_label(node)}: only 4-D (N, C, H, W) upsampling converts")
    if node.attrs.get("mode", "nearest") != "nearest":
        raise UnsupportedOpError(f"{node_label(node)} uses mode {node.attrs.get('mode')!r}; only nearest "
                                 "upsampling is a deconvolution (retrain with nearest, or keep it on the host)")
    scales = sizes = None
    if node.op == "Upsample":
        scales = const_value(node.inputs[1]) if len(node.inputs) > 1 else np.array(node.attrs.get("scales", []))
    else:
        scales = const_value(node.inputs[2]) if len(node.inputs) > 2 and node.inputs[2].name else None
        sizes = const_value(node.inputs[3]) if len(node.inputs) > 3 and node.inputs[3].name else None
        if node.attrs.get("axes") is not None:
            raise UnsupportedOpError(f"{node_label(node)}: the axes attribute is not supported; re-export without it")
    if sizes is not None and sizes.size:
        ratio = np.asarray(sizes, dtype=np.float64) / np.asarray(x_shape, dtype=np.float64)
    elif scales is not None and scales.size:
        ratio = np.asarray(scales, dtype=np.float64)
    else:
        raise UnsupportedOpError(f"{node_label(node)}: scales/sizes are not constant; fix the input shape")
    if ratio.shape != (4,) or ratio[0] != 1 or ratio[1] != 1:
        raise UnsupportedOpError(f"{node_label(node)}: only spatial upsampling converts (factors {ratio.tolist()})")
    kh, kw = ratio[2], ratio[3]
    if kh != round(kh) or kw != round(kw) or kh < 1 or kw < 1:
        raise UnsupportedOpError(f"{node_label(node)}: factors {kh}, {kw} are not integers; only integer "
                                 "nearest upsampling is a deconvolution")
    return int(kh), int(kw)


def _selects_floor(node: gs.Node, kh: int, kw: int) -> bool:
    """Run the node alone on an index ramp and check that output pixel (y, x) reads input (y // kh, x // kw)."""
    h, w = 3, 4
    ramp = np.arange(h * w, dtype=np.float32).reshape(1, 1, h, w)
    attrs = {k: v for k, v in node.attrs.items()}
    if node.op == "Upsample":
        n = onnx.helper.make_node("Resize", ["x", "", "s"], ["y"], mode="nearest",
                                  coordinate_transformation_mode="asymmetric", nearest_mode="floor")
    else:
        n = onnx.helper.make_node("Resize", ["x", "", "s"], ["y"], **attrs)
    g = onnx.helper.make_graph(
        [n], "ramp", [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 1, h, w])],
        [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, None)],
        [onnx.numpy_helper.from_array(np.array([1, 1, kh, kw], dtype=np.float32), "s")])
    m = onnx.helper.make_model(g, opset_imports=[onnx.helper.make_opsetid("", 17)])
    m.ir_version = 8  # onnxruntime releases for Python 3.10 read IR <= 11; make_model writes the newest
    y = run_model(m, {"x": ramp})["y"]
    want = ramp.repeat(kh, axis=2).repeat(kw, axis=3)
    return y.shape == want.shape and np.array_equal(y, want)


@register_pass
class UpsampleToDeconv(Pass):
    name = "upsample_to_deconv"
    summary = "nearest Resize/Upsample by an integer factor -> depthwise ConvTranspose (weights 1)"
    exact = True

    def run(self, graph: gs.Graph, ctx: PassContext) -> gs.Graph:
        count = 0
        for node in [n for n in graph.nodes if n.op in ("Resize", "Upsample")]:
            kh, kw = _factors(node)
            if node.op == "Resize" and not _selects_floor(node, kh, kw):
                raise UnsupportedOpError(
                    f"{node_label(node)}: its coordinate_transformation_mode/nearest_mode do not copy each "
                    "pixel to a k x k block, so it is not a deconvolution; re-export with asymmetric/floor")
            x, y = node.inputs[0], node.outputs[0]
            c = tensor_shape(x)[1]
            dtype = x.dtype if x.dtype is not None else np.float32
            w = make_const(graph, node.name + "_W", np.ones((c, 1, kh, kw), dtype=dtype))
            graph.nodes.append(gs.Node("ConvTranspose", unique_name(graph, node.name + "_deconv"),
                                       attrs={"group": c, "kernel_shape": [kh, kw], "strides": [kh, kw]},
                                       inputs=[x, w], outputs=[y]))
            node.inputs.clear()
            node.outputs.clear()
            count += 1
        ctx.stats.setdefault(self.name, {})["converted"] = count
        self.rewrites = count
        return graph

    def ensures(self, graph: gs.Graph) -> None:
        assert not any(n.op in ("Resize", "Upsample") for n in graph.nodes), "Resize/Upsample left"
