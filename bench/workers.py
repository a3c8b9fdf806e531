"""`snnc eval --workers 2` against `--workers 1`: throughput on the digits test set, with the machine's load.

    OMP_NUM_THREADS=1 python bench/workers.py                       # 48 test images, T = 64, batch 4, 2 rounds
    python bench/workers.py --images 96 --batch 8 --rounds 3 --mode fixed
    python bench/workers.py --address auto --workers 1,8            # on a running Ray cluster

The digits ReLU detector (examples/digits/models/digits_relu.onnx, calibrated on 8 training images) is evaluated
on --images labelled test images (`snnc.evaluation.digits`, COCO layout) exactly as `snnc eval --workers N
--no-errors` does, with one Ray instance of max(--workers) CPUs started once, so Ray's start-up is timed apart
(printed) and the rounds measure the evaluation alone. The worker counts run alternately in every round (the
order swapped from round to round), so a change of load hits both. Printed per run: wall time, images per second,
the machine's idle CPU share and steal time during the run (/proc/stat), and the CPU seconds the tasks used (the
report's timing["cpu"]: each task's process CPU time, all its threads): CPU seconds per image is the work, which
the number of workers should not change (no per-task overhead), and CPU seconds over wall time is how many cores
the workers got; the worker processes' whole CPU time (the tasks plus unpacking the network, building the ANN
session, returning the results), Ray's own processes' (GCS, raylet: local instance only) and the driver's
(this process: loading, merging, scoring). Then the ratio of
throughputs (the best and the median over rounds) with the load averages, and the ratio a quiet machine would
give from the CPU figures: (driver + tasks with 1 worker) / (driver + tasks with N / min(N, cores)), the tasks'
CPU time split over the workers and the driver's counted as if it never overlapped them (a lower bound).

On a shared machine the ratio is bounded by the cores the other jobs leave. Where Linux schedules by session
(sched_autogroup, on by default on desktop kernels and on the development machine), the CPU is first shared
between sessions and only then between a session's threads: the Ray workers, started from this session, share
one session's slice, so under load two workers get the same CPU time as one and the ratio stays near 1 (printed:
the "cores" the tasks got). Without autogroup, each runnable thread gets about C / (L + N) of a core under a load
L on C cores, so N workers would get N / (L + N) x C cores against 1 / (L + 1) x C for one.
The metrics of every run are checked to be identical to the first run's (the workers do not change the numbers).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

MODELS = Path(__file__).resolve().parent.parent / "examples" / "digits" / "models"


def cpu_times() -> tuple[float, float, float]:
    """(total, idle, steal) jiffies of all CPUs from /proc/stat (zeros elsewhere)."""
    try:
        f = [float(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    except OSError:
        return 0.0, 0.0, 0.0
    return sum(f[:8]), f[3] + f[4], f[7]


def ray_cpu() -> tuple[float, float]:
    """CPU seconds (user + system, from /proc) so far of this process's descendants: Ray's worker processes
    (command line "ray::...") and Ray's own processes (GCS, raylet, agents) of the private instance."""
    procs: dict[int, tuple[int, float, str]] = {}  # pid -> (parent, cpu seconds, command line)
    tick = os.sysconf("SC_CLK_TCK")
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            stat = (d / "stat").read_text()
            cmd = (d / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        f = stat[stat.rindex(")") + 2:].split()  # fields from the state on (the name may hold spaces)
        procs[int(d.name)] = (int(f[1]), (int(f[11]) + int(f[12])) / tick, cmd)
    mine, workers, system = {os.getpid()}, 0.0, 0.0
    changed = True
    while changed:  # descendants of this process
        changed = False
        for pid, (parent, _, _) in procs.items():
            if parent in mine and pid not in mine:
                mine.add(pid)
                changed = True
    for pid in mine - {os.getpid()}:
        _, cpu, cmd = procs[pid]
        if cmd.startswith("ray::"):
            workers += cpu
        else:
            system += cpu
    return workers, system


def autogroups() -> str:
    """Linux's session scheduling (sched_autogroup): whether it is on, and how many sessions have processes."""
    try:
        on = Path("/proc/sys/kernel/sched_autogroup_enabled").read_text().strip() == "1"
    except OSError:
        return "sched_autogroup: unknown"
    groups = set()
    for d in Path("/proc").iterdir():
        try:
            text = (d / "autogroup").read_text().split() if d.name.isdigit() else []
        except OSError:
            continue
        if text:
            groups.add(text[0])
    return f"sched_autogroup {'on' if on else 'off'}, {len(groups)} session groups with processes"


def prepare(root: Path, images: int, seed: int) -> tuple[Path, Path]:
    from PIL import Image

    from snnc.apps.outputs import write_output
    from snnc.compiler.api import compile_model
    from snnc.evaluation.digits import make_digits, write_digits

    calib = root / "calib"
    calib.mkdir()
    for i, img in enumerate(make_digits("train", 8, seed=seed).images):
        Image.fromarray(img).save(calib / f"{i:03d}.png")
    lava = write_output(compile_model(MODELS / "digits_relu.onnx", calib_dir=calib, progress=False),
                        root / "relu.lava")
    return Path(lava), write_digits(root / "test", "test", images, seed=seed, layout="coco")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=48)
    ap.add_argument("-T", type=int, default=64)
    ap.add_argument("--batch", type=int, default=4, help="images per Ray task")
    ap.add_argument("--mode", choices=("float", "fixed"), default="float")
    ap.add_argument("--workers", default="1,2", help="comma-separated worker counts to compare (first: reference)")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--address", help="an existing Ray cluster (ray.init(address=...)); default: a local instance")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)

    import ray

    from snnc.evaluation.run import EvalConfig, evaluate

    counts = [int(w) for w in args.workers.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        lava, data = prepare(Path(tmp), args.images, args.seed)
        tic = time.perf_counter()
        common = {"include_dashboard": False, "log_to_driver": False}
        if args.address:
            ray.init(address=args.address, **common)
        else:
            ray.init(num_cpus=max(counts), object_store_memory=512 * 1024**2, **common)
        ray_start = time.perf_counter() - tic
        # Warm-up, timed apart: each Ray worker process imports snnc and builds the simulator's plan on its first
        # task (seconds of CPU); without it the first measured run of the larger worker count would pay for it.
        tic = time.perf_counter()
        evaluate(lava, EvalConfig(T=[4], data=data, batch=1, errors=False, examples=0, progress=False,
                                  mode=args.mode, workers=max(counts)))
        warm = time.perf_counter() - tic
        print(f"digits ReLU detector, {args.images} test images, T = {args.T}, batch {args.batch} "
              f"({-(-args.images // args.batch)} tasks), {args.mode}; {os.cpu_count()} CPUs; "
              f"Ray start {ray_start:.1f} s, warm-up {warm:.1f} s (neither in the times below)", flush=True)
        walls: dict[int, list[float]] = {w: [] for w in counts}
        cpus: dict[int, list[float]] = {w: [] for w in counts}
        drivers: dict[int, list[float]] = {w: [] for w in counts}
        reference = None
        for r in range(args.rounds):
            for w in (counts if r % 2 == 0 else counts[::-1]):
                cfg = EvalConfig(T=[args.T], data=data, batch=args.batch, errors=False, examples=0, progress=False,
                                 mode=args.mode, workers=w)
                load0 = os.getloadavg()[0]
                c0 = cpu_times()
                r0 = ray_cpu()
                tic, dtic = time.perf_counter(), time.process_time()
                metrics = evaluate(lava, cfg)
                wall, driver = time.perf_counter() - tic, time.process_time() - dtic
                r1 = ray_cpu()
                in_workers, in_ray = r1[0] - r0[0], r1[1] - r0[1]
                c1 = cpu_times()
                total = max(1.0, c1[0] - c0[0])
                idle, steal = (c1[1] - c0[1]) / total, (c1[2] - c0[2]) / total
                cpu = metrics["timing"]["cpu"]
                same = {k: metrics[k] for k in ("accuracy", "activity")}
                if reference is None:
                    reference = same
                elif same != reference:
                    print("MISMATCH: the metrics differ from the first run's", flush=True)
                    return 1
                walls[w].append(wall)
                cpus[w].append(cpu / args.images)
                drivers[w].append(driver / args.images)
                print(f"round {r + 1}, --workers {w}: {wall:6.1f} s wall, {args.images / wall:5.2f} img/s; tasks' CPU "
                      f"{cpu:6.1f} s ({cpu / args.images:.2f} s per image, {cpu / wall:.2f} cores), worker processes "
                      f"{in_workers:.1f} s, Ray's own {in_ray:.1f} s, driver {driver:.1f} s; idle {idle:.0%}, "
                      f"steal {steal:.0%}, load {load0:.1f} -> {os.getloadavg()[0]:.1f}", flush=True)
        ray.shutdown()
    ref = counts[0]
    for w in counts[1:]:
        best = min(walls[ref]) / min(walls[w])
        med = statistics.median(walls[ref]) / statistics.median(walls[w])
        print(f"throughput --workers {w} / --workers {ref}: {best:.2f}x (best runs), {med:.2f}x (medians); "
              f"load average (1, 5, 15 min) {' '.join(f'{v:.1f}' for v in os.getloadavg())} on "
              f"{os.cpu_count()} CPUs; metrics identical in every run")
        c1, cn = statistics.median(cpus[ref]), statistics.median(cpus[w])
        d1, dn = statistics.median(drivers[ref]), statistics.median(drivers[w])
        cores = os.cpu_count() or 1
        quiet = (d1 + c1 / min(ref, cores)) / (dn + cn / min(w, cores))
        print(f"  {autogroups()} (on: the kernel shares the cores between sessions first, and the Ray workers "
              "are all in this one's)")
        print(f"  CPU per image: tasks {c1:.3f} s, driver {d1:.3f} s (--workers {ref}); tasks {cn:.3f} s, driver "
              f"{dn:.3f} s (--workers {w}); on a quiet machine: about {quiet:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
