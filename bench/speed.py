"""Speed and peak memory of the backends on the real yolov3-tiny, as ratios measured in one run (a script).

    python bench/speed.py                                   # numpy + c, 416 x 416, T = 256, 1 photo, fixed point
    python bench/speed.py --backends numpy,c,torch --size 128 -T 64 --mode float    # with torch (CPU)
    python bench/speed.py --backends numpy,torch --device cuda                      # torch on a GPU
    python bench/speed.py --size 128 -T 32 --images 2       # quick
    .venv310/bin/python bench/speed.py --backends numpy,lava --size 96 -T 16    # Lava (lava-nc needs Python 3.10)
    python bench/speed.py --synthetic --neuron SignedIF --mode float            # the random-weight shaped network
    python bench/speed.py --lava net.lava                   # an already compiled network
    python bench/speed.py --conv                            # onnxruntime vs numpy im2col convolutions

The network is the Darknet yolov3-tiny (COCO weights, `snnc.compiler.zoo`) converted at --size and compiled with
snnc's default options (calibrated on letterboxed skimage photos; docs/passes.md), unless --lava or
--synthetic. The input is --images letterboxed skimage photos.

Each backend runs in a subprocess of its own (the same interpreter), so its peak memory is its own: the worker's
peak RSS (VmHWM: Python, onnxruntime, the simulator) and, for C, the generated driver's, a process of its own; for
Lava the largest sum of the proportional set sizes (PSS) of its processes, one per Lava process.
Each worker first times the ANN (the spiking part of the original model, onnxruntime with all graph
optimizations, batch 1, mean of --ann-repeats after a warm-up), then runs the backend once for 1 step (onnxruntime
sessions, C compile: not timed) and times one simulation of T steps of all images; the ratio printed is
simulation time per image / (T x ANN time per image), both measured in that worker right after each other, wall
and CPU (user + system of the worker and its children). It then times a second simulation of --t0 steps (default
T / 4): the time per image-step from the difference of the two, (time(T) - time(t0)) / (T - t0), has the start-up
(plans, weight uploads, constant inputs) cancelled, and is printed as a ratio to the ANN's forward time too. The
line above the table gives the spiking graph's dense MACs per step (every connection layer as a dense
convolution, `snnc.compiler.inspect.layer_macs`) over the ANN's MACs (`snnc.compiler.energy.onnx_macs`): the
ratio a simulator that computes every layer densely each step cannot beat. The Lava backend is given per step, as a ratio to the
NumPy simulator's time per step measured in the same run: Lava runs depth + T steps per image (docs/backend_lava.md),
the ratio counts them all; building and starting the processes is printed apart. In fixed point every backend's
outputs and spike counts are checked against the NumPy simulator's, bit for bit.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "motorcycle")
CALIB = ("astronaut", "coffee", "chelsea")


def photo(name: str) -> np.ndarray:
    from skimage import data

    img = data.stereo_motorcycle()[0] if name == "motorcycle" else getattr(data, name)()
    return np.stack([img] * 3, -1) if img.ndim == 2 else img[..., :3]


def cpu_seconds() -> float:
    """User + system CPU seconds of this process (all threads) and of its waited-for children."""
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def _status_kib(pid: int | str, key: str, file: str = "status") -> int:
    try:
        for line in Path(f"/proc/{pid}/{file}").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


class MemorySampler(threading.Thread):
    """Peak memory from /proc (Linux): this process's VmHWM, and every 50 ms the descendants' VmHWM (the largest
    one) and the sum of their PSS (the largest sum; pages shared after a fork counted once in all). getrusage's
    ru_maxrss would not do: a child started by fork + exec starts with its parent's high-water mark."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.child_peak = self.children_total = 0
        self._done = threading.Event()

    def _descendants(self, pid: int) -> list[int]:
        out, todo = [], [pid]
        while todo:
            p = todo.pop()
            for task in Path(f"/proc/{p}/task").glob("*/children"):
                try:
                    kids = [int(k) for k in task.read_text().split()]
                except OSError:
                    continue
                out += kids
                todo += kids
        return out

    def run(self) -> None:
        import os

        while not self._done.wait(0.05):
            kids = self._descendants(os.getpid())
            if kids:
                self.child_peak = max([self.child_peak] + [_status_kib(k, "VmHWM") for k in kids])
                total = sum(_status_kib(k, "Pss", "smaps_rollup") for k in kids)
                self.children_total = max(self.children_total, total)

    def stop(self) -> dict[str, float]:
        self._done.set()
        self.join()
        return {"rss_mib": _status_kib("self", "VmHWM") / 1024, "child_rss_mib": self.child_peak / 1024,
                "children_total_mib": self.children_total / 1024}


# ---- the network -----------------------------------------------------------------------------------------------

def prepare(args: argparse.Namespace, work: Path) -> tuple[Path, Path, np.ndarray, str]:
    """The .lava file, the ANN (spiking part, ONNX) and the input batch; a line describing the network."""
    import onnx
    from PIL import Image

    from snnc.ir import lavafile
    from snnc.compiler.images import letterbox

    if args.synthetic:
        from synthetic import ann_onnx, bench_image, calibrate, yolov3_tiny_like

        net = yolov3_tiny_like(args.size, args.neuron)
        x = bench_image(args.size)
        calibrate(net, x)
        lavafile.save(net, work / "net.lava")
        (work / "ann.onnx").write_bytes(ann_onnx(net))
        x = np.concatenate([x] * args.images)
        return work / "net.lava", work / "ann.onnx", x, f"yolov3-tiny-shaped, random weights, {args.neuron}"
    if args.lava:
        net = lavafile.load(args.lava)
        if net.ann_onnx is None:
            raise SystemExit(f"{args.lava}: no embedded ANN (compiled with --no-ann): the ratio needs it")
        (work / "ann.onnx").write_bytes(net.ann_onnx)  # the whole model: the host part is small
        shape = net.input_layers[0].shape
        x = np.stack([letterbox(photo(n), shape[1:])[0] for n in _names(args.images)])
        return Path(args.lava), work / "ann.onnx", x, f"{args.lava}"
    from snnc.apps.outputs import write_output
    from snnc.compiler.api import compile_model
    from snnc.compiler.darknet import darknet_to_onnx
    from snnc.compiler.zoo import fetch_yolov3_tiny

    tag = f"size{args.size}-images{args.images}"
    if (work / "net.lava").exists() and (work / "ann.onnx").exists() and (work / "what.txt").exists():
        what, kept = (work / "what.txt").read_text().split("\n", 1)
        if kept == tag:
            x = np.stack([letterbox(photo(n), (args.size, args.size))[0] for n in _names(args.images)])
            return work / "net.lava", work / "ann.onnx", x, what + " (kept from an earlier run)"
    cfg, weights = fetch_yolov3_tiny()
    model = work / "yolov3-tiny.onnx"
    onnx.save(darknet_to_onnx(cfg, weights, input_size=args.size, decode=True), model)
    calib = work / "calib"
    calib.mkdir(exist_ok=True)
    for n in CALIB:
        Image.fromarray(photo(n)).save(calib / f"{n}.png")
    tic = time.perf_counter()
    result = compile_model(model, calib_dir=calib, progress=False, include_ann=False)
    write_output(result, work / "net.lava")
    onnx.save(result.ann, work / "ann.onnx")
    x = np.stack([letterbox(photo(n), (args.size, args.size))[0] for n in _names(args.images)])
    passes = ", ".join(result.network.meta["passes"])
    what = f"yolov3-tiny (COCO) {args.size}x{args.size}, compiled in {time.perf_counter() - tic:.0f} s ({passes})"
    (work / "what.txt").write_text(what + "\n" + tag)
    return work / "net.lava", work / "ann.onnx", x, what


def _names(n: int) -> list[str]:
    return [PHOTOS[i % len(PHOTOS)] for i in range(n)]


# ---- one backend, in its own process ---------------------------------------------------------------------------

def time_ann(ann: Path, x: np.ndarray, repeats: int) -> tuple[float, float]:
    """(wall, CPU) seconds of one onnxruntime forward pass of one image (the mean over the batch and repeats)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")  # as the simulator's sessions
    sess = ort.InferenceSession(str(ann), opts, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    sess.run(None, {name: x[:1]})
    t0, c0 = time.perf_counter(), cpu_seconds()
    for _ in range(repeats):
        for b in range(x.shape[0]):
            sess.run(None, {name: x[b:b + 1]})
    n = repeats * x.shape[0]
    return (time.perf_counter() - t0) / n, (cpu_seconds() - c0) / n


def worker(args: argparse.Namespace) -> int:
    from snnc.backends import get_backend
    from snnc.ir import lavafile

    net = lavafile.load(args.lava)
    x = np.load(args.inputs)
    ann_wall, ann_cpu = time_ann(Path(args.ann), x, args.ann_repeats)
    be = get_backend(args.worker)
    kw = {"progress": False} if args.worker in ("numpy", "lava", "torch") else {}
    if args.worker == "torch":
        kw["device"] = args.device
    be.simulate(net, x[:1], 1, mode=args.mode, **kw)  # warm-up: sessions, the C build (cached), lava import
    sampler = MemorySampler()
    sampler.start()
    ts = [int(t) for t in args.T.split(",")]
    T = max(ts)
    t0, c0 = time.perf_counter(), cpu_seconds()
    res = be.simulate(net, x, ts, mode=args.mode, **kw)
    wall, cpu = time.perf_counter() - t0, cpu_seconds() - c0
    short = args.t0 if args.t0 is not None else max(1, T // 4)
    t1, c1 = time.perf_counter(), cpu_seconds()
    be.simulate(net, x, short, mode=args.mode, **kw)
    wall_short, cpu_short = time.perf_counter() - t1, cpu_seconds() - c1
    out = {"backend": args.worker, "wall": wall, "cpu": cpu, "ann_wall": ann_wall, "ann_cpu": ann_cpu,
           "images": int(x.shape[0]), "T": T, "neurons": int(sum(res.neurons.values())),
           "t0": short, "wall_t0": wall_short, "cpu_t0": cpu_short,
           "rates": res.firing_rates(), **sampler.stop()}
    if args.worker == "torch":
        out["device"] = res.extra.get("device")
        if out["device"].startswith("cuda"):
            import torch

            out["gpu"] = torch.cuda.get_device_name(torch.device(out["device"]))
            out["gpu_peak_mib"] = torch.cuda.max_memory_allocated(torch.device(out["device"])) / 1024**2
    if args.worker == "lava":
        e = res.extra
        out.update(lava_steps=e["lava_steps"], lava_run=e["run_seconds"], lava_build=e["build_seconds"])
    if args.worker == "c":
        out["c_ms_per_step"] = res.extra.get("ms_per_step")
    arrays = {f"out:{o}": v for o, v in res.outputs[T].items()}
    arrays.update({f"spikes:{k}": v for k, v in res.spike_counts.items()})
    np.savez(args.result + ".npz", **arrays)
    Path(args.result).write_text(json.dumps(out))
    return 0


def run_worker(backend: str, lava: Path, ann: Path, inputs: Path, args: argparse.Namespace, work: Path) -> dict:
    result = work / f"{backend}.json"
    cmd = [sys.executable, __file__, "--worker", backend, "--lava", str(lava), "--ann", str(ann), "--inputs",
           str(inputs), "--result", str(result), "-T", args.T, "--mode", args.mode,
           "--ann-repeats", str(args.ann_repeats), "--device", args.device]
    if args.t0 is not None:
        cmd += ["--t0", str(args.t0)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{backend} worker failed:\n{proc.stderr[-3000:]}")
    r = json.loads(result.read_text())
    r["arrays"] = dict(np.load(str(result) + ".npz"))
    return r


# ---- the report ------------------------------------------------------------------------------------------------

def graph_macs(lava: Path, ann: Path) -> tuple[int, int]:
    """(dense MACs per step of the spiking graph, MACs of the ANN) per image."""
    import onnx

    from snnc.compiler.energy import onnx_macs
    from snnc.compiler.inspect import layer_macs
    from snnc.ir import lavafile

    net = lavafile.load(lava)
    return sum(layer_macs(l, net) for l in net.layers), onnx_macs(onnx.load(str(ann)))


def report(rows: list[dict], mode: str, macs: tuple[int, int] | None = None) -> None:
    T = rows[0]["T"]
    print(f"T = {T}, {rows[0]['images']} image(s), {mode} mode, {rows[0]['neurons'] / 1e6:.2f} M neurons")
    if macs is not None:
        print(f"dense MACs per step: spiking graph {macs[0] / 1e6:.1f} M, ANN {macs[1] / 1e6:.1f} M: "
              f"{macs[0] / macs[1]:.2f}x")
    print(f"{'backend':<7} {'s/image':>9} {'ms/step':>9} {'ANN ms':>8} {'/(T x ANN) wall':>16} {'CPU':>7} "
          f"{'peak RSS MiB':>20}")
    for r in rows:
        per_image = r["wall"] / r["images"]
        driver = f"{r['child_rss_mib']:.0f}" if r["child_rss_mib"] else "n/a: ran < 50 ms"
        rss = f"{r['rss_mib']:.0f}" + (f" (driver {driver})" if r["backend"] == "c" else "")
        if r["backend"] == "lava":
            rss += f" (+ processes {r['children_total_mib']:.0f})"
        if r.get("gpu"):
            rss += f" (GPU {r['gpu_peak_mib']:.0f})"
        print(f"{r['backend']:<7} {per_image:9.2f} {per_image / T * 1e3:9.2f} {r['ann_wall'] * 1e3:8.2f} "
              f"{per_image / (T * r['ann_wall']):16.2f} {r['cpu'] / r['images'] / (T * r['ann_cpu']):7.2f} {rss:>20}")
    print("per image-step from the difference of two runs, (time(T) - time(t0)) / (T - t0), start-up cancelled; "
          "/ MACs: the ratio to the ANN over the graph's MAC ratio (1: as fast per MAC as the ANN)")
    k = macs[0] / macs[1] if macs else float("nan")
    print(f"{'backend':<7} {'t0':>5} {'ms/step wall':>13} {'/ ANN wall':>11} {'ms/step CPU':>12} {'/ ANN CPU':>10} "
          f"{'/ MACs wall':>12} {'/ MACs CPU':>11}")
    for r in rows:
        n, dt = r["images"], T - r["t0"]
        if dt <= 0:
            continue
        step_wall = (r["wall"] - r["wall_t0"]) / (n * dt)
        step_cpu = (r["cpu"] - r["cpu_t0"]) / (n * dt)
        name = r["backend"] + (f" ({r['gpu']})" if r.get("gpu") else "")
        print(f"{name:<7} {r['t0']:5d} {step_wall * 1e3:13.2f} {step_wall / r['ann_wall']:11.2f} "
              f"{step_cpu * 1e3:12.2f} {step_cpu / r['ann_cpu']:10.2f} {step_wall / r['ann_wall'] / k:12.2f} "
              f"{step_cpu / r['ann_cpu'] / k:11.2f}")
    ref = next((r for r in rows if r["backend"] == "numpy"), None)
    lava = next((r for r in rows if r["backend"] == "lava"), None)
    c = next((r for r in rows if r["backend"] == "c"), None)
    if c is not None and c.get("c_ms_per_step"):
        print(f"c: {c['c_ms_per_step']:.2f} ms/step of CPU time in snn_step (the driver's clock(), 1 thread), against "
              f"{c['cpu'] / c['images'] / c['T'] * 1e3:.2f} ms/step CPU for the whole simulate call")
    if lava is not None:
        step = lava["lava_run"] / (lava["images"] * lava["lava_steps"])
        print(f"lava: {step * 1e3:.1f} ms per Lava step ({lava['lava_steps']} steps per image: depth "
              f"{lava['lava_steps'] - T} + T), build + start {lava['lava_build']:.1f} s per simulate call")
        if ref is not None:
            np_step = ref["wall"] / (ref["images"] * T)
            print(f"lava / numpy per step: {step / np_step:.1f}x (numpy {np_step * 1e3:.2f} ms/step); whole "
                  f"simulate call: {lava['wall'] / ref['wall']:.1f}x")
    if ref is not None:
        for r in rows:
            if r is ref:
                continue
            same = all(np.array_equal(ref["arrays"][k], r["arrays"].get(k)) for k in ref["arrays"])
            if mode == "fixed":
                print(f"{r['backend']} vs numpy: {'bit-exact' if same else 'DIFFERENT'} (outputs, spike counts)")
            else:
                rel = max(float(np.abs(ref["arrays"][k] - r["arrays"][k]).max() / (np.abs(ref["arrays"][k]).max()
                                                                                    + 1e-30))
                          for k in ref["arrays"] if k.startswith("out:"))
                print(f"{r['backend']} vs numpy: max |diff| / max |numpy| at the heads {rel:.2e}")
    import os

    print(f"load average (1, 5, 15 min) at the end: {' '.join(f'{v:.1f}' for v in os.getloadavg())} on "
          f"{os.cpu_count()} CPUs")
    print("firing rates (numpy or first backend): " + ", ".join(
        f"{k} {100 * v:.1f}%" for k, v in (ref or rows[0])["rates"].items()))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backends", default="numpy,c", help="comma-separated: numpy, c, lava, torch")
    ap.add_argument("--size", type=int, default=416, help="input size (a multiple of 32)")
    ap.add_argument("-T", "--T", default="256", help="time steps (a list such as 64,128,256 runs once to the largest)")
    ap.add_argument("--images", type=int, default=1, help="photos in the batch")
    ap.add_argument("--mode", choices=("fixed", "float"), default="fixed")
    ap.add_argument("--ann-repeats", type=int, default=5)
    ap.add_argument("--t0", type=int, help="steps of the second, shorter run (default T / 4)")
    ap.add_argument("--device", default="cpu", help="torch backend: cpu or cuda[:N]")
    ap.add_argument("--lava", help="bench this compiled .lava file (its embedded ANN is the reference)")
    ap.add_argument("--synthetic", action="store_true", help="the random-weight yolov3-tiny-shaped network")
    ap.add_argument("--neuron", choices=("IF", "SignedIF"), default=None, help="synthetic network's neurons")
    ap.add_argument("--conv", action="store_true", help="only compare onnxruntime and numpy im2col convolutions")
    ap.add_argument("--keep", help="compile into this folder and keep it; a later run with the same --keep, "
                    "--size and --images reuses its network (yolov3-tiny at 416 px compiles in minutes)")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--ann", help=argparse.SUPPRESS)
    ap.add_argument("--inputs", help=argparse.SUPPRESS)
    ap.add_argument("--result", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        return worker(args)
    if args.conv:
        from synthetic import conv_compare

        conv_compare(args.size)
        return 0
    if args.neuron:
        args.synthetic = True
    args.neuron = args.neuron or "IF"
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    with tempfile.TemporaryDirectory(prefix="snnc-speed-") as tmp:
        work = Path(tmp)
        if args.keep and not (args.synthetic or args.lava):
            work = Path(args.keep)
            work.mkdir(parents=True, exist_ok=True)
        lava, ann, x, what = prepare(args, work)
        np.save(work / "x.npy", x)
        print(f"network: {what}; input {tuple(x.shape)}")
        rows = [run_worker(b, lava, ann, work / "x.npy", args, work) for b in backends]
        macs = graph_macs(lava, ann)
    report(rows, args.mode, macs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
