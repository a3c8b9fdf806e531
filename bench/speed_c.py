"""Speed of the C backend against the NumPy reference on the yolov3-tiny-shaped network of bench/speed.py.

    python bench/speed_c.py                          # 416x416, T=64, fixed point, IF neurons
    python bench/speed_c.py --size 128 -T 32 --mode float --neuron SignedIF
    python bench/speed_c.py --cflags "-O3 -march=native" --no-numpy

Same network and calibration as bench/speed.py (random weights, layer-wise thresholds at the 99.9th percentile of
the rate-limit activations on a smooth random image). Printed: build time, the C driver's time per step (its own
clock around snn_step), the whole `simulate` call, the NumPy backend's time per step, whether the results agree
(bit for bit in fixed point), and the firing rates that drive the event-driven cost.
`bench_c(...)` returns the same figures as a dict for bench/speed.py.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from speed import bench_image, calibrate, yolov3_tiny_like  # noqa: E402

from snnc.backends import get_backend  # noqa: E402
from snnc.backends.c import CBackend  # noqa: E402
from snnc.backends.c.backend import DEFAULT_CFLAGS  # noqa: E402
from snnc.backends.c.generate import render  # noqa: E402


def bench_c(size: int = 416, T: int = 64, mode: str = "fixed", neuron: str = "IF", cflags: str | None = None,
            numpy: bool = True, threads: int | None = None, cache_dir: str | None = None) -> dict:
    """Time the C backend (and the NumPy reference unless numpy=False) on one image; returns the figures."""
    net = yolov3_tiny_like(size, neuron)
    x = bench_image(size)
    calibrate(net, x)
    with tempfile.TemporaryDirectory(prefix="snnc-bench-c-") as tmp:
        return _bench(net, x, T, mode, neuron, cflags, numpy, threads, cache_dir or tmp)


def _bench(net, x, T, mode, neuron, cflags, numpy, threads, cache) -> dict:
    size = x.shape[-1]
    bk = CBackend(cflags=cflags, cache_dir=cache)
    out: dict = {"size": size, "T": T, "mode": mode, "neuron": neuron,
                 "cflags": cflags or os.environ.get("SNNC_C_CFLAGS", DEFAULT_CFLAGS)}
    t0 = time.perf_counter()
    res = bk.simulate(net, x, 1, mode=mode)  # generate + compile (+ one step)
    out["build_s"] = time.perf_counter() - t0
    out["build_dir"] = res.extra["build_dir"]
    proj = render(net, mode)
    out["weight_mb"], out["state_mb"] = proj.weight_bytes / 2**20, proj.state_bytes / 2**20
    t0 = time.perf_counter()
    res = bk.simulate(net, x, T, mode=mode)
    out["c_total_s"] = time.perf_counter() - t0
    out["c_ms_per_step"] = res.extra["ms_per_step"]
    out["firing_rates"] = res.firing_rates()
    if numpy:
        ref_bk = get_backend("numpy")
        t0 = time.perf_counter()
        ref = ref_bk.simulate(net, x, T, mode=mode, threads=threads, progress=False)
        out["numpy_total_s"] = time.perf_counter() - t0
        out["numpy_ms_per_step"] = out["numpy_total_s"] / T * 1e3
        if mode == "fixed":
            out["bit_exact"] = all(np.array_equal(res.outputs[T][k], ref.outputs[T][k]) for k in net.outputs) and \
                all(np.array_equal(res.spike_counts[k], ref.spike_counts[k]) for k in ref.spike_counts)
        else:
            out["max_rel_diff"] = max(float(np.abs(res.outputs[T][k] - ref.outputs[T][k]).max()
                                            / (np.abs(ref.outputs[T][k]).max() + 1e-30)) for k in net.outputs)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=416)
    ap.add_argument("-T", type=int, default=64)
    ap.add_argument("--mode", choices=("float", "fixed"), default="fixed")
    ap.add_argument("--neuron", choices=("IF", "SignedIF"), default="IF")
    ap.add_argument("--cflags", default=None, help="compiler flags (default $SNNC_C_CFLAGS or -O2)")
    ap.add_argument("--threads", type=int, default=None, help="NumPy backend threads")
    ap.add_argument("--no-numpy", action="store_true", help="skip the NumPy reference run")
    args = ap.parse_args(argv)
    r = bench_c(args.size, args.T, args.mode, args.neuron, args.cflags, not args.no_numpy, args.threads)
    print(f"yolov3-tiny-shaped {r['size']}x{r['size']}, {r['mode']}, {r['neuron']}, T={r['T']}, cflags {r['cflags']}")
    print(f"C: build {r['build_s']:.1f} s; {r['c_ms_per_step']:.1f} ms/step (driver); whole simulate "
          f"{r['c_total_s']:.1f} s, 1 thread; memory: weights {r['weight_mb']:.1f} MiB, state {r['state_mb']:.1f} MiB")
    if "numpy_ms_per_step" in r:
        agree = (f"bit-exact {r['bit_exact']}" if "bit_exact" in r else f"max rel diff {r['max_rel_diff']:.2e}")
        print(f"NumPy: {r['numpy_ms_per_step']:.1f} ms/step ({r['numpy_total_s']:.1f} s); C is "
              f"{r['numpy_total_s'] / r['c_total_s']:.1f}x faster end to end; {agree}")
    print("firing rates: " + ", ".join(f"{k} {100 * v:.1f}%" for k, v in r["firing_rates"].items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
