"""Dense vs event-driven synapses of the NumPy simulator, one thread: where does the event path pay?

    OMP_NUM_THREADS=1 python bench/event_driven.py                     # yolov3-tiny's layer shapes, float
    OMP_NUM_THREADS=1 python bench/event_driven.py --mode fixed        # int64 event path vs exact float32 pieces
    OMP_NUM_THREADS=1 python bench/event_driven.py --rates 0.001,0.01 --samples 4 --repeats 5

For each layer shape (yolov3-tiny's convolutions at 416 x 416 input, one step of one image per sample) and each
input firing rate, random signed spikes at that rate go through the dense operator (`ops.make_op`: onnxruntime,
one thread; fixed: `ops.ExactIntOp`) and through `event.EventSynapses`; printed: the ratio dense time / event time
(> 1: the event path is faster), best of --repeats, both measured in this run right after each other, the
crossover rate per shape (interpolated in log rate where the ratio crosses 1), and the rate up to which the
simulator's "auto" mode takes the event path for that shape (`event.auto_rate`), to be at or below the crossover. The last line is the machine's
load average: the ratio is steadier than either time under load, since both paths run under the same load.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

# (name, C_in, C_out, input H = W, kernel, stride): yolov3-tiny's spiking convolutions at 416 x 416
SHAPES = [
    ("conv 16->32 3x3 @208", 16, 32, 208, 3, 1),
    ("conv 32->64 3x3 @104", 32, 64, 104, 3, 1),
    ("conv 64->128 3x3 @52", 64, 128, 52, 3, 1),
    ("conv 128->256 3x3 @26", 128, 256, 26, 3, 1),
    ("conv 256->512 3x3 @13", 256, 512, 13, 3, 1),
    ("conv 1024->256 1x1 @13", 1024, 256, 13, 1, 1),
    ("conv 256->512 3x3 s2 @26", 256, 512, 26, 3, 2),
]
RATES = "0.001,0.003,0.01,0.03,0.1,0.3"


def best_time(fn, x, repeats: int) -> float:
    fn(x)  # warm-up (sessions, page faults)
    best = float("inf")
    for _ in range(repeats):
        tic = time.perf_counter()
        fn(x)
        best = min(best, time.perf_counter() - tic)
    return best


def crossover(rates: list[float], ratios: list[float]) -> str:
    for (r0, q0), (r1, q1) in zip(zip(rates, ratios), zip(rates[1:], ratios[1:])):
        if q0 >= 1 > q1:
            f = np.log(q0) / (np.log(q0) - np.log(q1))
            return f"{np.exp(np.log(r0) + f * (np.log(r1) - np.log(r0))):.2%}"
    if ratios and ratios[0] < 1:
        return f"< {rates[0]:.2%} (never pays)"
    return f"> {rates[-1]:.2%}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mode", choices=("float", "fixed"), default="float")
    ap.add_argument("--rates", default=RATES, help="comma-separated input firing rates")
    ap.add_argument("--samples", type=int, default=2, help="samples (steps x images) per call")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--shapes", help="comma-separated indices into the shape list (default: all)")
    args = ap.parse_args(argv)

    from snnc.backends.numpy import event, ops
    from snnc.ir.network import Layer

    rates = [float(r) for r in args.rates.split(",")]
    shapes = SHAPES if not args.shapes else [SHAPES[int(i)] for i in args.shapes.split(",")]
    rng = np.random.default_rng(0)
    print(f"mode {args.mode}, {args.samples} samples per call, best of {args.repeats}, one thread "
          f"(OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')})")
    print("ratio dense time / event time (> 1: event faster)")
    print(f"{'layer shape':28s} {'dense ms':>9s} " + " ".join(f"{r:>7.1%}" for r in rates) + "  crossover  auto up to")
    for name, cin, cout, hw, k, s in shapes:
        w = (rng.standard_normal((cout, cin, k, k)) / np.sqrt(cin * k * k)).astype(np.float32)
        oh = (hw + 2 * (k // 2) - k) // s + 1
        layer = Layer("l", "conv", ["x"], (cout, oh, oh), weight=w, bias=np.zeros(cout, np.float32),
                      attrs={"strides": [s, s], "pads": [k // 2] * 4})
        if args.mode == "fixed":
            w_int = np.round(w / np.abs(w).max() * 32767).astype(np.int64)
            dense = ops.ExactIntOp(layer, w_int, 1, 1)
            ev = event.EventSynapses(layer, w_int, None, (cin, hw, hw))
        else:
            dense = ops.make_op(layer, w, layer.bias, 1)
            ev = event.EventSynapses(layer, w, layer.bias, (cin, hw, hw))
        ratios, t_dense = [], []
        for r in rates:
            x = (rng.random((args.samples, cin, hw, hw)) < r).astype(np.int8)
            x[rng.random(x.shape) < 0.2] *= -1  # some -1 spikes (memory IF, SignedIF)
            td = best_time(dense, x, args.repeats)
            te = best_time(ev, x, args.repeats)
            t_dense.append(td)
            ratios.append(td / te)
        print(f"{name:28s} {1e3 * np.median(t_dense):9.1f} " + " ".join(f"{q:7.2f}" for q in ratios)
              + f"  {crossover(rates, ratios):9s}  {event.auto_rate(layer, args.mode):.2%}", flush=True)
    print(f"load average (1, 5, 15 min): {' '.join(f'{v:.1f}' for v in os.getloadavg())} on {os.cpu_count()} CPUs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
