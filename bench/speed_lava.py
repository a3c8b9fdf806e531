"""Time per step of the Lava backend (lava-nc's CPU simulator) vs the NumPy reference, in one run (a script).

    python bench/speed_lava.py                    # 32x32 YOLO-shaped network, T=64, fixed point, 1 image
    python bench/speed_lava.py --size 64 -T 32 --mode float

The network: conv, strided convs, signed (IBT) and IF neurons, an edge pad + 2x2 conv, a deconvolution, a concat
of branches of different depth and two linear heads, random weights. Printed: seconds per step of each backend
(Lava: the fastest image of a batch of three,
without building, compiling and starting the processes, printed apart), and the ratio.
Both results are checked to agree (fixed point: bit for bit).
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from snnc.backends import get_backend
from snnc.backends.lava.compare import compare_with_numpy
from snnc.compiler.network import Layer, Network, Neuron


def small_yolo(size: int, seed: int = 0) -> Network:
    rng = np.random.default_rng(seed)

    def conv(name, src, cin, cout, hw, k=3, s=1, pads=(1, 1, 1, 1), kind="SignedIF"):
        oh = (hw + pads[0] + pads[2] - k) // s + 1
        w = rng.normal(0, 1.5 / np.sqrt(cin * k * k), (cout, cin, k, k)).astype(np.float32)
        n = None if kind is None else Neuron(kind, rng.uniform(0.3, 1.2, cout).astype(np.float32),
                                             alpha=0.1 if kind == "SignedIF" else 0.0, v_init=0.5)
        return Layer(name, "conv", [src], (cout, oh, oh), w, rng.normal(0, 0.2, cout).astype(np.float32),
                     {"strides": [s, s], "pads": list(pads), "dilations": [1, 1], "group": 1}, n)

    s2, s4 = size // 2, size // 4
    up_w = rng.normal(0, 1.0, (16, 16, 3, 3)).astype(np.float32)
    return Network([
        Layer("x", "input", [], (3, size, size)),
        conv("c1", "x", 3, 16, size), conv("c2", "c1", 16, 32, size, s=2), conv("c3", "c2", 32, 32, s2, s=2,
                                                                                 kind="IF"),
        Layer("p3", "pad", ["c3"], (32, s4 + 1, s4 + 1), attrs={"pads": [0, 0, 1, 1], "mode": "edge"}),
        conv("c4", "p3", 32, 32, s4 + 1, k=2, pads=(0, 0, 0, 0), kind="IF"),
        conv("c5", "c4", 32, 16, s4, k=1, pads=(0, 0, 0, 0)),
        conv("head1", "c5", 16, 21, s4, k=1, pads=(0, 0, 0, 0), kind=None),
        Layer("up", "deconv", ["c5"], (16, s2, s2), up_w, np.zeros(16, np.float32),
              {"strides": [2, 2], "pads": [1, 1, 1, 1], "dilations": [1, 1], "group": 1, "output_padding": [1, 1]},
              Neuron("SignedIF", np.ones(16, np.float32), alpha=0.1, v_init=0.5)),
        Layer("cat", "concat", ["up", "c2"], (48, s2, s2), attrs={"axis": 0}),
        conv("c6", "cat", 48, 16, s2),
        conv("head2", "c6", 16, 21, s2, k=1, pads=(0, 0, 0, 0), kind=None)], ["head1", "head2"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=32)
    ap.add_argument("-T", type=int, default=64)
    ap.add_argument("--mode", choices=["fixed", "float"], default="fixed")
    args = ap.parse_args()
    net = small_yolo(args.size)
    x = (np.random.default_rng(1).integers(0, 256, (1, 3, args.size, args.size)) / 255.0).astype(np.float32)
    get_backend("numpy").simulate(net, x, 2, mode=args.mode, progress=False)  # warm the operator caches
    tic = time.perf_counter()
    get_backend("numpy").simulate(net, x, args.T, mode=args.mode, progress=False)
    numpy_step = (time.perf_counter() - tic) / args.T
    cmp = compare_with_numpy(net, np.concatenate([x, x, x]), args.T, mode=args.mode)
    lava = cmp.lava.extra
    first, best = lava["sample_seconds"][0], min(lava["sample_seconds"])  # the first includes compile and start
    lava_step = best / lava["lava_steps"]
    neurons = sum(cmp.lava.neurons.values())
    print(f"network: {args.size}x{args.size} input, {len(net.layers)} layers, {neurons:,} neurons, mode {args.mode}, "
          f"T={args.T} (Lava runs {lava['lava_steps']} steps: T + depth {lava['lava_steps'] - args.T})")
    print(f"numpy: {numpy_step * 1e3:.2f} ms/step")
    print(f"lava:  {lava_step * 1e3:.2f} ms/step (+ {lava['build_seconds'] + first - best:.2f} s to build, "
          "compile and start the processes, once per simulate call)")
    print(f"ratio lava / numpy: {lava_step / numpy_step:.1f}x per step")
    print("agreement:", "exact" if cmp.ok and args.mode == "fixed" else ("same spikes" if cmp.ok else cmp.problems))


if __name__ == "__main__":
    main()
