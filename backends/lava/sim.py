"""`simulate` on Lava's CPU simulator, returning the same SimResult as the NumPy reference.

One process graph is built per call (`builder.build_plan`) and run once per sample of the batch for D + T steps,
D the largest population depth: each population is active for exactly T steps (t_start = its depth, t_end =
depth + T), so its spike counts and accumulated outputs are those of the reference's steps 1..T
(docs/backend_lava.md, "Delays"). Between samples the source value and the population states (t, v, acc,
spike_count) are reset; connection buffers and Delays need no reset, their stale values reach populations only
while these are idle.
"""

from __future__ import annotations

import time
from typing import Any, Sequence

import numpy as np

from snnc.backends import SimResult, checkpoints
from snnc.compiler.errors import SnncError
from snnc.compiler.network import Network

from .builder import build_plan, with_v_init
from .plan import from_lava, make_plan, per_neuron, to_lava


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
             encoding: str | None = None) -> SimResult:
    """Run `net` in lava-nc's CPU simulator; outputs, spike counts and (fixed) raw sums as the NumPy reference."""
    del seed  # direct encoding only: nothing is random
    ts = checkpoints(T)
    t_max = ts[-1]
    if decode not in ("membrane", "spikes"):
        raise SnncError(f"decode must be 'membrane' or 'spikes', got {decode!r}")
    if (encoding or net.input_encoding.get("kind", "direct")) != "direct":
        raise SnncError("the Lava backend supports direct input encoding only")
    started = time.perf_counter()
    fixed = mode == "fixed"
    net = with_v_init(net, v_init)
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
    lnet = build_plan(plan, steps=t_max, rec_at=ts,
                      input_values={k: to_lava(v[0], chw[k]) for k, v in values.items()})
    steps = plan.max_depth + t_max
    neuron_pops = [p for p in plan.pops if p.kind in ("IF", "SignedIF")]
    counts = {p.name: np.zeros(batch, np.int64) for p in neuron_pops}
    recs = {o: [] for o in plan.outputs}
    built = time.perf_counter()
    sample_seconds = []
    try:
        for b in range(batch):
            tic = time.perf_counter()
            if b:
                for k, v in values.items():
                    lnet.populations[k].value.set(to_lava(v[b], chw[k]))
                for p in plan.pops:
                    if p.kind == "source":
                        continue
                    proc = lnet.populations[p.name]
                    proc.t.set(np.zeros(1))
                    proc.acc.set(np.zeros(p.shape))
                    if p.kind != "Linear":
                        proc.v.set(p.v0)
                        proc.spike_count.set(np.zeros(p.shape))
            lnet.run(steps)
            sample_seconds.append(time.perf_counter() - tic)
            for p in neuron_pops:
                counts[p.name][b] = int(np.asarray(lnet.populations[p.name].spike_count.get()).sum())
            for o in plan.outputs:
                recs[o].append(from_lava(np.asarray(lnet.populations[o].rec.get()), chw[o]))
    finally:
        lnet.stop()
    ran = time.perf_counter()
    outputs: dict[int, dict[str, np.ndarray]] = {t: {} for t in ts}
    sums: dict[int, dict[str, np.ndarray]] = {t: {} for t in ts}
    for o in plan.outputs:
        rec = np.stack(recs[o], axis=1)  # (K, B, C, H, W)
        pop = plan.pop(o)
        unit = from_lava(per_neuron(pop.unit.astype(np.float64), chw[o]), chw[o])
        for i, t in enumerate(ts):
            raw = rec[i].astype(np.int64) if fixed else rec[i]
            outputs[t][o] = (raw.astype(np.float64) * unit) / t
            sums[t][o] = raw
    extra = {"mode": mode, "encoding": "direct", "seconds": ran - started, "build_seconds": built - started,
             "run_seconds": ran - built, "lava_steps": steps, "depth": {p.name: p.depth for p in plan.pops},
             "seconds_per_step": (ran - built) / max(1, steps * batch), "sample_seconds": sample_seconds}
    if fixed:
        extra["sums"] = sums
        extra["weight_bits"] = plan.weight_bits
    neurons = {p.name: int(np.prod(p.shape)) for p in neuron_pops}
    return SimResult(outputs=outputs, spike_counts=counts, neurons=neurons, steps=t_max, extra=extra)
