"""A yolov3-tiny-shaped network with random weights (Spiking YOLOv3's Table 1), for benches that need no download.

`python bench/speed.py --synthetic` benches it instead of the real yolov3-tiny; `python bench/speed.py --conv`
times its convolutions in onnxruntime against numpy im2col. The network: strided convolutions instead of
max-pools, a ConvTranspose upsampling, a concat route, two linear 1x1 heads (docs/methods.md section 4, Spiking YOLOv3's Table 1),
layer-wise thresholds at the 99.9th percentile of its rate-limit activations on a smooth random image.
"""

from __future__ import annotations

import time

import numpy as np

from snnc.backends.numpy import rate_limit_forward
from snnc.ir.network import Layer, Network, Neuron

# (out channels, kernel, stride) of the backbone, Spiking YOLOv3's Table 1
BACKBONE = [(16, 3, 1), (16, 3, 2), (32, 3, 1), (32, 3, 2), (64, 3, 1), (64, 3, 2), (128, 3, 1), (128, 3, 2),
            (256, 3, 1), (256, 3, 2), (512, 3, 1), (1024, 3, 1), (256, 1, 1), (512, 3, 1)]


def yolov3_tiny_like(size: int = 416, neuron: str = "IF", seed: int = 0, classes: int = 80) -> Network:
    rng = np.random.default_rng(seed)
    layers = [Layer("images", "input", [], (3, size, size))]
    c, h, prev, route, mid = 3, size, "images", None, None

    def conv(name, src, c_in, c_out, k, s, h_in, act=True, op="conv"):
        if op == "conv":
            w = rng.standard_normal((c_out, c_in, k, k)) * np.sqrt(2.0 / (c_in * k * k))
            h_out = (h_in + 2 * (k // 2) - k) // s + 1
            attrs = {"strides": [s, s], "pads": [k // 2] * 4, "dilations": [1, 1], "group": 1}
        else:  # ConvTranspose k3 s2 p1 op1: doubles the size
            w = rng.standard_normal((c_in, c_out, k, k)) * np.sqrt(2.0 / (c_in * k * k / 4))
            h_out = h_in * 2
            attrs = {"strides": [2, 2], "pads": [1, 1, 1, 1], "dilations": [1, 1], "group": 1,
                     "output_padding": [1, 1]}
        n = Neuron(neuron, np.ones(c_out, np.float32), alpha=0.1 if neuron == "SignedIF" else 0.0,
                   v_init=0.5) if act else None
        layers.append(Layer(name, op, [src], (c_out, h_out, h_out), w.astype(np.float32),
                            (rng.standard_normal(c_out) * 0.05).astype(np.float32), attrs, n))
        return h_out

    for i, (co, k, s) in enumerate(BACKBONE):
        name = f"conv{i}"
        h = conv(name, prev, c, co, k, s, h)
        c, prev = co, name
        if i == 8:
            mid = (name, co, h)  # the 26x26x256 feature the second head concatenates
        if i == 12:
            route = (name, co, h)
    head_ch = 3 * (5 + classes)
    conv("head13", prev, c, head_ch, 1, 1, h, act=False)
    r, rc, rh = route
    conv("route_conv", r, rc, 128, 1, 1, rh)
    uh = conv("upsample", "route_conv", 128, 128, 3, 2, rh, op="deconv")
    layers.append(Layer("concat", "concat", ["upsample", mid[0]], (128 + mid[1], uh, uh), attrs={"axis": 0}))
    conv("conv26", "concat", 128 + mid[1], 256, 3, 1, uh)
    conv("head26", "conv26", 256, head_ch, 1, 1, uh, act=False)
    return Network(layers, ["head13", "head26"], input_encoding={"kind": "direct", "scale": 1 / 255})


def calibrate(net: Network, x: np.ndarray, percentile: float = 99.9) -> None:
    """Layer-wise data-based normalization: theta = percentile of |activation| of the unclipped ANN."""
    for layer in net.neuron_layers:
        layer.neuron.threshold = np.full(layer.shape[0], 1e30, np.float32)
    acts = rate_limit_forward(net, x, all_layers=True)
    for layer in net.neuron_layers:
        lam = float(np.percentile(np.abs(acts[layer.name]), percentile))
        layer.neuron.threshold = np.full(layer.shape[0], max(lam, 1e-6), np.float32)


def ann_onnx(net: Network):
    """The rate-limit ANN of `net` as one ONNX model (Conv/ConvTranspose + Clip/LeakyRelu), for onnxruntime."""
    from onnx import TensorProto, helper, numpy_helper

    nodes, inits = [], []
    for layer in net.layers:
        if layer.op == "input":
            continue
        if layer.op == "concat":
            nodes.append(helper.make_node("Concat", layer.inputs, [layer.name], axis=1))
            continue
        ins = [layer.inputs[0], layer.name + "_w"]
        inits.append(numpy_helper.from_array(layer.weight, layer.name + "_w"))
        if layer.bias is not None:
            inits.append(numpy_helper.from_array(layer.bias, layer.name + "_b"))
            ins.append(layer.name + "_b")
        a = {k: v for k, v in layer.attrs.items() if k in ("strides", "pads", "dilations", "group", "output_padding")}
        z = layer.name if layer.neuron is None else layer.name + "_z"
        nodes.append(helper.make_node("Conv" if layer.op == "conv" else "ConvTranspose", ins, [z], **a))
        if layer.neuron is not None:
            theta = float(layer.neuron.threshold[0])
            if layer.neuron.kind == "SignedIF":
                nodes.append(helper.make_node("LeakyRelu", [z], [z + "_l"], alpha=layer.neuron.alpha))
                z, lo = z + "_l", -theta
            else:
                lo = 0.0
            inits += [numpy_helper.from_array(np.array(lo, np.float32), layer.name + "_lo"),
                      numpy_helper.from_array(np.array(theta, np.float32), layer.name + "_hi")]
            nodes.append(helper.make_node("Clip", [z, layer.name + "_lo", layer.name + "_hi"], [layer.name]))
    inp = net.layers[0]
    g = helper.make_graph(nodes, "ann", [helper.make_tensor_value_info(inp.name, TensorProto.FLOAT, None)],
                          [helper.make_tensor_value_info(o, TensorProto.FLOAT, None) for o in net.outputs], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    return m.SerializeToString()


def bench_image(size: int, seed: int = 1) -> np.ndarray:
    """A smooth random 'photo' in [0, 1] (random images are all high frequency)."""
    rng = np.random.default_rng(seed)
    small = rng.random((3, max(2, size // 16), max(2, size // 16)))
    big = np.kron(small, np.ones((16, 16)))[:, :size, :size]
    return np.clip(big + 0.1 * rng.standard_normal(big.shape), 0, 1).astype(np.float32)[None]


def im2col_conv(x: np.ndarray, w: np.ndarray, stride: int, pad: int) -> np.ndarray:
    """numpy Conv (group 1, square kernel): sliding windows + one float32 matmul."""
    n, c, h, wd = x.shape
    o, _, k, _ = w.shape
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    win = np.lib.stride_tricks.sliding_window_view(xp, (k, k), axis=(2, 3))[:, :, ::stride, ::stride]
    ho, wo = win.shape[2:4]
    cols = win.transpose(0, 2, 3, 1, 4, 5).reshape(n * ho * wo, c * k * k)
    return (cols @ w.reshape(o, -1).T).reshape(n, ho, wo, o).transpose(0, 3, 1, 2)


def conv_compare(size: int, steps: int = 8, rate: float = 0.1) -> None:
    """Time one time-batched convolution (steps x spikes) per layer size: onnxruntime vs numpy im2col."""
    from snnc.backends.numpy import ops

    net = yolov3_tiny_like(size)
    shapes = {l.name: l.shape for l in net.layers}
    rng = np.random.default_rng(0)
    for name in ("conv1", "conv2", "conv8", "conv11", "conv26"):
        layer = net.layer(name)
        x = (rng.random((steps,) + shapes[layer.inputs[0]]) < rate).astype(np.int8)
        op = ops.make_op(layer, layer.weight, None, 2)
        op(x[:1])
        t0 = time.perf_counter()
        op(x)
        t_ort = time.perf_counter() - t0
        t0 = time.perf_counter()
        im2col_conv(x.astype(np.float32), layer.weight, layer.attrs["strides"][0], layer.attrs["pads"][0])
        t_np = time.perf_counter() - t0
        print(f"{name} {shapes[layer.inputs[0]]} -> {layer.shape}, {steps} steps: onnxruntime {t_ort * 1e3:.0f} ms, "
              f"numpy im2col {t_np * 1e3:.0f} ms ({t_np / t_ort:.1f}x)")
