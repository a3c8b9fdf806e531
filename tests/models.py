"""Small ONNX models built in code for the golden tests (onnx.helper; deterministic weights from a seed)."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17


class Builder:
    """Tiny graph builder: each method appends one node and returns its output name."""

    def __init__(self, seed: int = 0) -> None:
        self.rng = np.random.default_rng(seed)
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self.n = 0

    def _name(self, op: str) -> str:
        self.n += 1
        return f"{op.lower()}_{self.n}"

    def const(self, value: np.ndarray, name: str | None = None) -> str:
        name = name or self._name("c")
        self.inits.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    def node(self, op: str, inputs: list[str], n_out: int = 1, **attrs) -> str:
        name = self._name(op)
        outs = [name] + [f"{name}_out{i}" for i in range(1, n_out)]
        self.nodes.append(helper.make_node(op, inputs, outs, name=name, **attrs))
        return name

    def conv(self, x: str, c_in: int, c_out: int, k: int = 3, stride: int = 1, pad: int | None = None,
             group: int = 1, bias: bool = True, **attrs) -> str:
        pad = k // 2 if pad is None else pad
        w = self.rng.normal(0, 1.0 / np.sqrt(c_in // group * k * k), (c_out, c_in // group, k, k))
        ins = [x, self.const(w.astype(np.float32))]
        if bias:
            ins.append(self.const(self.rng.normal(0, 0.1, c_out).astype(np.float32)))
        return self.node("Conv", ins, kernel_shape=[k, k], strides=[stride, stride], pads=[pad] * 4, group=group,
                         **attrs)

    def bn(self, x: str, c: int, eps: float = 1e-3) -> str:
        r = self.rng
        params = [r.uniform(0.5, 1.5, c), r.normal(0, 0.1, c), r.normal(0, 0.2, c), r.uniform(0.5, 2.0, c)]
        return self.node("BatchNormalization", [x] + [self.const(p.astype(np.float32)) for p in params],
                         epsilon=eps)

    def model(self, x_shape, outputs: list[str], input_name: str = "images") -> onnx.ModelProto:
        g = helper.make_graph(
            self.nodes, "test", [helper.make_tensor_value_info(input_name, TensorProto.FLOAT, x_shape)],
            [helper.make_tensor_value_info(o, TensorProto.FLOAT, None) for o in outputs], self.inits)
        m = helper.make_model(g, opset_imports=[helper.make_opsetid("", OPSET)])
        m.ir_version = 8
        return onnx.shape_inference.infer_shapes(m)


def tiny_yolo(seed: int = 0, size: int = 32, leaky: bool = True, host: bool = True) -> onnx.ModelProto:
    """A yolov3-tiny-shaped network: conv+BN+act, max-pools (2/2 and the 2/1 with asymmetric pad), route,
    upsample (Resize), concat, two linear heads, and a host part (sigmoid + reshape)."""
    b = Builder(seed)
    act = (lambda x: b.node("LeakyRelu", [x], alpha=0.1)) if leaky else (lambda x: b.node("Relu", [x]))
    x = act(b.bn(b.conv("images", 3, 8, bias=False), 8))
    x = b.node("MaxPool", [x], kernel_shape=[2, 2], strides=[2, 2])
    x = act(b.bn(b.conv(x, 8, 16, bias=False), 16))
    mid = x
    x = b.node("MaxPool", [x], kernel_shape=[2, 2], strides=[2, 2])
    x = act(b.bn(b.conv(x, 16, 16, bias=False), 16))
    x = b.node("MaxPool", [x], kernel_shape=[2, 2], strides=[1, 1], pads=[0, 0, 1, 1])
    x = act(b.bn(b.conv(x, 16, 16, k=1, bias=False), 16))
    head0 = b.conv(x, 16, 12, k=1)
    y = act(b.bn(b.conv(x, 16, 8, k=1, bias=False), 8))
    y = b.node("Resize", [y, "", b.const(np.array([1, 1, 2, 2], np.float32))], mode="nearest",
               coordinate_transformation_mode="asymmetric", nearest_mode="floor")
    y = b.node("Concat", [y, mid], axis=1)
    y = act(b.conv(y, 24, 16))
    head1 = b.conv(y, 16, 12, k=1)
    outs = [head0, head1]
    if host:
        outs = [b.node("Sigmoid", [b.node("Reshape", [h, b.const(np.array([1, 12, -1], np.int64))])])
                for h in (head0, head1)]
    return b.model([1, 3, size, size], outs)


def tiny_detector(folder, photos: int = 2):
    """tiny_yolo (ReLU) with the anchor-based YOLO decoding attached, saved as folder/det.onnx, and `photos` random
    32 x 32 PNGs in folder/photos: (model path, photo folder)."""
    from snnc.compiler.frontend import prepare
    from snnc.compiler.heads import HeadSpec, attach_head

    raw = folder / "raw.onnx"
    onnx.save(tiny_yolo(leaky=False, host=False), raw)
    model = folder / "det.onnx"
    onnx.save(attach_head(prepare(raw), HeadSpec("yolo", (4, 5, 7, 6, 10, 12, 14, 11), ("thing",))), model)
    return model, random_photos(folder / "photos", photos)


def random_photos(folder, n: int, size: int = 32, seed: int = 0):
    """n random RGB PNGs of size x size in `folder` (created): a calibration or evaluation set for tiny models."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(folder / f"p{i}.png")
    return folder


# The classic conversion (split leaky-ReLU, max-pool trees, channel-wise norm): the pass-level golden dumps were
# taken with it, and the lean defaults (graded / count / auto) have golden tests of their own.
CLASSIC = {"leaky": "split", "maxpool": "exact", "norm": "channel"}


def run_pass(model: onnx.ModelProto, name: str, **options):
    """snnc.compiler.pipeline.run_pass with the classic choices unless the test names others."""
    from snnc.compiler import pipeline

    return pipeline.run_pass(model, name, **{**CLASSIC, **options})


def apply_pass(model: onnx.ModelProto, name: str, **options) -> onnx.ModelProto:
    return run_pass(model, name, **options).model
