"""Speed of the NumPy reference simulator on a yolov3-tiny-shaped network (a script, not a test).

    python bench/speed.py                      # 416x416, T=256, one image, float mode
    python bench/speed.py --size 128 -T 32     # quick
    python bench/speed.py --mode fixed --neuron SignedIF --lava net.lava

The network is Spiking YOLOv3's (METHODS.md section 4, 002 Table 1: strided convolutions instead of max-pools,
a ConvTranspose upsampling, a concat route, two linear 1x1 heads) with random weights and layer-wise thresholds
set to the 99.9th percentile of its rate-limit activations on the bench image, or a compiled `.lava` file.
Printed: seconds per image, the ratio to T x the ANN forward time measured in the same run (onnxruntime on the
whole equivalent ANN with all graph optimizations, and the per-layer rate_limit_forward), firing rates, peak memory.
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
import tracemalloc

import numpy as np

from snnc.backends.numpy import rate_limit_forward, simulate
from snnc.compiler.network import Layer, Network, Neuron

# (out channels, kernel, stride) of the backbone, 002 Table 1
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


def cpu_seconds() -> float:
    """User + system CPU time of this process, all threads (robust to other processes sharing the cores)."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


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


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=416)
    ap.add_argument("-T", type=str, default="256", help="checkpoints, e.g. 64,128,256")
    ap.add_argument("--mode", choices=("float", "fixed"), default="float")
    ap.add_argument("--neuron", choices=("IF", "SignedIF"), default="IF")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--max-mib", type=float, default=None, help="MiB for the time-chunked buffers (default: the "
                    "simulator's)")
    ap.add_argument("--lava", type=str, default=None, help="bench a compiled .lava file instead")
    ap.add_argument("--ann-repeats", type=int, default=5)
    ap.add_argument("--conv", action="store_true", help="only compare onnxruntime and numpy im2col convolutions")
    args = ap.parse_args(argv)
    ts = [int(t) for t in args.T.split(",")]
    if args.conv:
        conv_compare(args.size)
        return 0

    t0 = time.perf_counter()
    if args.lava:
        from snnc.compiler import lavafile

        net = lavafile.load(args.lava)
        shape = net.input_layers[0].shape
        x = bench_image(shape[1])[:, :, :shape[1], :shape[2]]
    else:
        net = yolov3_tiny_like(args.size, args.neuron)
        x = bench_image(args.size)
        calibrate(net, x)
    print(f"network: {len(net.layers)} layers, {sum(int(np.prod(l.shape)) for l in net.neuron_layers) / 1e6:.2f} M "
          f"neurons, built in {time.perf_counter() - t0:.1f}s")

    # ANN references, measured in this run
    rate_limit_forward(net, x, threads=args.threads)  # build the per-layer sessions
    t0, c0 = time.perf_counter(), cpu_seconds()
    for _ in range(args.ann_repeats):
        ref = rate_limit_forward(net, x, threads=args.threads)
    t_rl, c_rl = (time.perf_counter() - t0) / args.ann_repeats, (cpu_seconds() - c0) / args.ann_repeats
    t_ort = c_ort = None
    if not args.lava:
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")  # as the simulator's sessions
        if args.threads:
            opts.intra_op_num_threads = args.threads
        sess = ort.InferenceSession(ann_onnx(net), opts, providers=["CPUExecutionProvider"])
        sess.run(None, {"images": x})
        t0, c0 = time.perf_counter(), cpu_seconds()
        for _ in range(args.ann_repeats):
            sess.run(None, {"images": x})
        t_ort, c_ort = (time.perf_counter() - t0) / args.ann_repeats, (cpu_seconds() - c0) / args.ann_repeats

    kw = {} if args.max_mib is None else {"max_bytes": int(args.max_mib * 2**20)}
    tracemalloc.start()
    t0, c0 = time.perf_counter(), cpu_seconds()
    res = simulate(net, x, ts, mode=args.mode, threads=args.threads, progress=sys.stderr.isatty(), **kw)
    t_sim, c_sim = time.perf_counter() - t0, cpu_seconds() - c0
    _, traced_peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    rss_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux

    T = ts[-1]
    print(f"numpy {args.mode}, T={T}, 1 image {x.shape[2]}x{x.shape[3]}: {t_sim:.1f} s "
          f"({t_sim / T * 1e3:.1f} ms/step, {res.extra['chunk_steps']} steps per chunk, "
          f"{res.extra['threads']} threads)")
    print(f"  CPU time (user + system, all threads): {c_sim:.1f} s ({c_sim / T * 1e3:.1f} ms/step)")
    print(f"ANN rate_limit_forward: {t_rl * 1e3:.1f} ms wall, {c_rl * 1e3:.1f} ms CPU -> simulation = "
          f"{t_sim / (T * t_rl):.2f} x T x ANN (wall), {c_sim / (T * c_rl):.2f} (CPU)")
    if t_ort is not None:
        print(f"ANN onnxruntime (whole graph, optimized): {t_ort * 1e3:.1f} ms wall, {c_ort * 1e3:.1f} ms CPU -> "
              f"simulation = {t_sim / (T * t_ort):.2f} x T x ANN (wall), {c_sim / (T * c_ort):.2f} (CPU)")
    print(f"  split: synapses (convolutions) {res.extra['synapse_seconds']:.1f} s, neuron scan "
          f"{res.extra['neuron_seconds']:.1f} s (wall)")
    print(f"peak memory: process RSS {rss_peak:.0f} MiB, numpy allocations during simulation "
          f"{traced_peak / 2**20:.0f} MiB")
    lay = sorted(res.extra["layer_seconds"].items(), key=lambda kv: -kv[1])[:6]
    print("slowest layers: " + ", ".join(f"{k} {v:.1f}s" for k, v in lay))
    rates = res.firing_rates()
    print("firing rates: " + ", ".join(f"{k} {100 * v:.1f}%" for k, v in rates.items()))
    for t in ts:
        err = max(float(np.abs(res.outputs[t][k] - ref[k]).mean() / (np.abs(ref[k]).mean() + 1e-12))
                  for k in net.outputs)
        print(f"T={t}: mean |SNN - rate-limit ANN| / mean |ANN| at the heads = {err:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
