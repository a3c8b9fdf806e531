"""`simulate` on Lava's CPU simulator, returning the same SimResult as the NumPy reference.

One process graph is built per call (`builder.build_plan`) and runs the whole batch in one Lava run of
B x (D + T) steps, D the largest population depth: each sample has a period of D + T steps, in which each
population is active for exactly T steps (t_start = its depth, t_end = depth + T), so its spike counts and
accumulated outputs are those of the reference's steps 1..T (docs/backend_lava.md, "Delays"). The source sends
sample b's input during period b and the populations reset their state at the start of each period; stale values
in connection buffers and Delays reach populations only while these are idle. Results are read once at the end,
from small Vars (per-layer spike totals, outputs at the checkpoints): lava-nc 0.10.0 moves Var values one
number per message.
"""

from __future__ import annotations

import time
from typing import Any, Sequence

import numpy as np

from snnc.backends import SimResult, checkpoints
from snnc.ir.errors import SnncError
from snnc.ir.network import Network

from snnc.backends.lava.builder import build_plan
from snnc.backends.lava.plan import NEURON_KINDS, from_lava, make_plan, per_neuron, to_lava


def _inputs(net: Network, x: Any) -> dict[str, np.ndarray]:
    inputs = net.input_layers
    if not inputs:
        raise SnncError("the network has no input layer")
    if isinstance(x, dict):
        xs = {l.name: np.asarray(x[l.name]) for l in inputs if l.name in x}
        if len(xs) != len(inputs):
            raise SnncError(f"no input given for input layer(s) {[l.name for l in inputs if l.name not in x]}")
    elif len(inputs) != 1:
        raise SnncError(f"the network has {len(inputs)} input layers; pass a dict name -> array")
    else:
        xs = {inputs[0].name: np.asarray(x)}
    for l in inputs:
        a = xs[l.name]
        a = a[None] if a.ndim == len(l.shape) else a
        if a.shape[1:] != tuple(l.shape):
            raise SnncError(f"input {l.name}: expected shape (B, {', '.join(map(str, l.shape))}), got {a.shape}")
        xs[l.name] = a
    if len({a.shape[0] for a in xs.values()}) != 1:
        raise SnncError("inputs have different batch sizes")
    return xs


def simulate(net: Network, x: Any, T: int | Sequence[int], *, mode: str = "float", v_init: float | None = None,
             decode: str = "membrane", seed: int = 0, weight_bits: int | None = None,
             encoding: str | None = None, progress: bool | None = None, constant_input: bool = True) -> SimResult:
    """Run `net` in lava-nc's CPU simulator; outputs, spike counts and (fixed) raw sums as the NumPy reference.

    constant_input: the input layer's synaptic sums enter as a constant current computed once (default); False
    runs them as connection processes every step (builder.build_plan)."""
    del seed  # direct encoding only: nothing is random
    ts = checkpoints(T)
    t_max = ts[-1]
    if decode not in ("membrane", "spikes"):
        raise SnncError(f"decode must be 'membrane' or 'spikes', got {decode!r}")
    if (encoding or net.input_encoding.get("kind", "direct")) != "direct":
        raise SnncError("the Lava backend supports direct input encoding only")
    started = time.perf_counter()
    fixed = mode == "fixed"
    net = net.with_v_init(v_init)
    xs = _inputs(net, x)
    batch = next(iter(xs.values())).shape[0]
    values, input_max = {}, None
    enc = net.input_encoding
    for name, a in xs.items():
        if fixed:
            ints = np.round(np.asarray(a, dtype=np.float64) / float(enc.get("scale", 1.0)))
            peak = int(np.abs(ints).max(initial=0))
            default = int(round(float(enc.get("max_value", 1.0)) / float(enc.get("scale", 1.0))))
            input_max = max(input_max or 0, peak, default)
            values[name] = ints
        else:
            values[name] = np.asarray(a, dtype=np.float32)
    plan = make_plan(net, mode, weight_bits, input_max)
    chw = plan.chw
    lnet = build_plan(plan, steps=t_max, rec_at=ts, samples=batch, constant_input=constant_input,
                      input_values={k: to_lava(v, chw[k]) for k, v in values.items()})
    steps = lnet.period * batch
    neuron_pops = [p for p in plan.pops if p.kind in NEURON_KINDS]
    built = time.perf_counter()
    bar = _progress_bar(progress, steps)
    try:
        done = 0
        while done < steps:  # in pieces only for the progress bar: every run() call costs a round trip
            n = steps - done if bar is None else min(steps - done, max(1, steps // 20))
            lnet.run(n)
            done += n
            if bar is not None:
                bar.update(n)
        counts = {p.name: np.rint(np.asarray(lnet.populations[p.name].spikes.get())).astype(np.int64)
                  for p in neuron_pops}
        recs = {o: np.asarray(lnet.populations[o].rec.get()) for o in plan.outputs}  # (B, K, *Lava shape)
    finally:
        if bar is not None:
            bar.close()
        lnet.stop()
    ran = time.perf_counter()
    outputs: dict[int, dict[str, np.ndarray]] = {t: {} for t in ts}
    sums: dict[int, dict[str, np.ndarray]] = {t: {} for t in ts}
    for o in plan.outputs:
        rec = from_lava(recs[o], chw[o])  # (B, K, C, H, W); Var.get returns float64, exact for these integers
        unit = from_lava(per_neuron(plan.pop(o).unit.astype(np.float64), chw[o]), chw[o])
        for i, t in enumerate(ts):
            raw = np.rint(rec[:, i]).astype(np.int64) if fixed else rec[:, i]
            outputs[t][o] = (raw.astype(np.float64) * unit) / t
            sums[t][o] = raw
    extra = {"mode": mode, "encoding": "direct", "seconds": ran - started, "build_seconds": built - started,
             "run_seconds": ran - built, "lava_steps": lnet.period, "depth": {p.name: p.depth for p in plan.pops},
             "seconds_per_step": (ran - built) / max(1, steps),
             "constant_current": sorted(lnet.currents)}
    if fixed:
        extra["sums"] = sums
        extra["weight_bits"] = plan.weight_bits
    neurons = {p.name: int(np.prod(p.shape)) for p in neuron_pops}
    return SimResult(outputs=outputs, spike_counts=counts, neurons=neurons, steps=t_max, extra=extra)


def _progress_bar(progress: bool | None, steps: int):
    """A tqdm bar over Lava steps (None: only on a terminal), or None."""
    import sys

    if progress is None:
        progress = sys.stderr.isatty()
    if not progress:
        return None
    from tqdm import tqdm

    return tqdm(total=steps, desc="lava", unit="step", leave=False)
