"""Instantiate and connect the Lava processes of a `Plan` (imports lava; see plan.py for the graph itself).

`build()` returns a `LavaNet`: the processes by layer name, connected, with named input and output ports, and the
run configuration that picks each process's model (`SnncSimCfg`). A Lava user can connect their own source to
`input_ports[name]` (build with `source=False`), probes or sinks to `output_ports[name]` or to any population's
Vars (`v`, `acc`, `spike_count`), or run with another run configuration.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
from lava.magma.core.run_conditions import RunSteps
from lava.magma.core.run_configs import Loihi2SimCfg
from lava.proc.conv.process import Conv
from lava.proc.dense.models import PyDenseModelFloat
from lava.proc.dense.process import Dense
from lava.proc.sparse.models import PySparseModelFloat
from lava.proc.sparse.process import Sparse

from snnc.ir import lavafile
from snnc.ir.errors import SnncError
from snnc.ir.network import Network

from snnc.backends.lava import processes as P
from snnc.backends.lava.plan import ACC_BITS, Plan, make_plan


class SnncSimCfg(Loihi2SimCfg):
    """Loihi2SimCfg that picks the model of each process instance chosen at build time.

    fixed mode: snnc's fixed-point neuron models; for lava's Conv process snnc's fixed-point Conv model (int32
    messages, lava's 24-bit wrap) where the layer's |a_out| bound fits 24 bits, else snnc's float64 Conv model
    on the integer weights (processes/conv.py: lava's own Conv models break on 128+ groups); lava's float64
    Dense and Sparse models on the integer weights (their bit-accurate models clip weights to 8 bits).
    float64 sums of integers are exact below 2**53 (plan.make_plan checks the bound), so all give the exact
    integers of the NumPy reference. float mode: every process's floating_pt model (snnc's for Conv).
    """

    def __init__(self, models: dict[int, type], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._models = dict(models)

    def select(self, process, proc_models):
        model = self._models.get(id(process))
        return model if model is not None else super().select(process, proc_models)


@dataclass
class LavaNet:
    plan: Plan
    populations: dict[str, Any]  # layer name -> ConstantSource / IF / MemoryIF / SignedIF / Linear
    connections: dict[str, Any]  # connection name -> lava Conv / Dense / Sparse
    delays: dict[str, Any]  # "<source>+<steps>" -> Delay
    input_ports: dict[str, list]  # input layer name -> the InPorts its values feed
    output_ports: dict[str, Any]  # output layer name -> OutPort (spikes, or z of a linear head)
    models: dict[int, type] = field(default_factory=dict)
    started: bool = False
    period: int = 0  # Lava steps per sample (0: one open-ended sample)
    currents: dict[str, np.ndarray] = field(default_factory=dict)  # population -> constant input current

    @property
    def mode(self) -> str:
        return self.plan.mode

    @property
    def depth(self) -> dict[str, int]:
        """Synapse stages from the input: Lava step depth + k is the reference's step k."""
        return {p.name: p.depth for p in self.plan.pops}

    def run_cfg(self, **kwargs: Any) -> SnncSimCfg:
        kwargs.setdefault("select_tag", "fixed_pt" if self.mode == "fixed" else "floating_pt")
        return SnncSimCfg(self.models, **kwargs)

    def _anchor(self):
        return next(iter(self.populations.values()))

    def run(self, steps: int, run_cfg=None) -> None:
        self._anchor().run(condition=RunSteps(num_steps=int(steps)), run_cfg=run_cfg or self.run_cfg())
        self.started = True

    def stop(self) -> None:
        if self.started:
            self._anchor().stop()
            self.started = False


def _delay(lnet: LavaNet, src, name: str, shape, steps: int, fixed: bool, is_input: bool):
    """The Delay of `steps` after population `name` (shared by its consumers); connects src when given."""
    key = f"{name}+{steps}"
    if key not in lnet.delays:
        d = P.Delay(shape=shape, steps=steps, name=f"delay:{key}")
        if src is not None:
            src.s_out.connect(d.s_in)
        if is_input:
            lnet.input_ports.setdefault(name, []).append(d.s_in)
        lnet.delays[key] = d
        lnet.models[id(d)] = P.MODELS[(P.Delay, fixed)]
    return lnet.delays[key]


def _values(plan: Plan, name: str, input_values: dict[str, np.ndarray] | None) -> np.ndarray:
    """The input source's value(s) as (samples or 1, *Lava shape)."""
    shape = plan.pop(name).shape
    value = np.zeros(shape) if input_values is None else np.asarray(input_values[name])
    return value[None] if value.ndim == len(shape) else value


def _synaptic_sum(c, value: np.ndarray, target_shape: tuple[int, ...], fixed: bool) -> np.ndarray:
    """What connection c's Lava process sends for one input value, computed as its process model does."""
    if c.kind == "conv":
        a = P.lava_conv(value, c.weight, c.conv["stride"], c.conv["padding"], c.conv["dilation"], c.conv["groups"])
    else:
        a = c.weight @ np.asarray(value, dtype=np.float64).reshape(-1)
    a = np.asarray(a).reshape(target_shape)
    return np.rint(a).astype(P.FIXED_STATE) if fixed else a.astype(np.float64)


def constant_currents(plan: Plan, input_values: dict[str, np.ndarray] | None) -> dict[str, np.ndarray]:
    """Per population fed by the input source: the sum of its constant connections' a_out, (samples, *shape).

    Under direct encoding the image, and so these synaptic sums, are the same at every step: computed here once,
    they enter the population as a constant current instead of through a connection process every step. Exact
    in fixed point (integer sums; float64 holds them exactly, make_plan checks the bound)."""
    fixed = plan.mode == "fixed"
    out: dict[str, np.ndarray] = {}
    for c in plan.conns:
        if not c.constant:
            continue
        vals = _values(plan, c.source, input_values)
        target = plan.pop(c.target)
        shape = getattr(target, "in_shape", target.shape)  # a CountMaxPool's a_in has its input layer's shape
        cur = np.stack([_synaptic_sum(c, v, shape, fixed) for v in vals])
        out[c.target] = cur if c.target not in out else out[c.target] + cur
    return out


def build_plan(plan: Plan, *, steps: int = 0, rec_at: Sequence[int] = (), source: bool = True,
               input_values: dict[str, np.ndarray] | None = None, samples: int = 1,
               constant_input: bool = False) -> LavaNet:
    """Processes for `plan`.

    steps > 0: every population stops after `steps` active steps (t_end = depth + steps), and the run is
    `samples` samples of period = max depth + steps Lava steps each (populations reset at each sample's start).
    rec_at: active steps at which populations copy their accumulated output into rec[sample].
    input_values: per input layer, a value in Lava layout, or (samples, *Lava shape) values, one per sample.
    constant_input (with source; `simulate` sets it): connections fed by the input source alone are not built,
    nor is the source when nothing else reads it; their synaptic sums, computed once (`constant_currents`), are
    each target population's constant current (`LavaNet.currents`). False (default): a connection process
    computes them every step, the per-step path; bit-exact with the constant one in fixed point.
    """
    fixed = plan.mode == "fixed"
    lnet = LavaNet(plan, {}, {}, {}, {}, {})
    constant = constant_input and source
    lnet.currents = constant_currents(plan, input_values) if constant else {}
    needed = {c.source for c in plan.conns if not (constant and c.constant)}
    rec = np.asarray(list(rec_at) or [0], dtype=np.int64)
    dtype = P.FIXED_STATE if fixed else np.float32
    period = plan.max_depth + steps if steps else 0
    lnet.period = period
    for p in plan.pops:
        common = dict(shape=p.shape, t_start=p.depth, t_end=p.depth + steps if steps else 0, rec_at=rec,
                      period=period, samples=samples, name=p.name, current=lnet.currents.get(p.name))
        if p.kind == "source":
            if not source or p.name not in needed:  # all its consumers take the constant current
                continue
            value = np.zeros(p.shape) if input_values is None else np.asarray(input_values[p.name])
            batched = value.ndim == len(p.shape) + 1
            if batched and not period:
                raise SnncError(f"input {p.name}: one value per sample needs steps > 0 (the sample period)")
            proc = P.ConstantSource(value=value.astype(P.FIXED_MSG if fixed else np.float64),
                                    period=period if batched else 0, name=p.name)
            cls = P.ConstantSource
        elif p.kind == "CountMaxPool":
            cls = P.CountMaxPool
            proc = cls(in_shape=p.in_shape, kernel=p.kernel, strides=p.strides, **common)
        elif p.kind == "Linear":
            proc, cls = P.Linear(bias=p.bias.astype(dtype), **common), P.Linear
        elif p.kind in ("IF", "MemoryIF"):
            cls = P.MemoryIF if p.kind == "MemoryIF" else P.IF
            proc = cls(bias=p.bias.astype(dtype), vth=p.vth.astype(dtype), v_init=p.v0.astype(dtype), **common)
        elif p.kind == "GradedSignedMemoryIF":
            cls = P.GradedSignedMemoryIF
            msg = P.FIXED_MSG if fixed else np.float32
            proc = cls(bias=p.bias.astype(dtype), vth=p.vth.astype(dtype), vth_neg=p.vth_neg.astype(dtype),
                       v_init=p.v0.astype(dtype), pay_pos=p.pay_pos.astype(msg), pay_neg=p.pay_neg.astype(msg),
                       neg_level=p.neg_level.astype(dtype), **common)
        else:
            cls = P.SignedMemoryIF if p.kind == "SignedMemoryIF" else P.SignedIF
            proc = cls(bias=p.bias.astype(dtype), vth=p.vth.astype(dtype), vth_neg=p.vth_neg.astype(dtype),
                       v_init=p.v0.astype(dtype), **common)
        lnet.populations[p.name] = proc
        lnet.models[id(proc)] = P.MODELS[(cls, fixed)]
    sources = {p.name for p in plan.pops if p.kind == "source"}
    for c in plan.conns:
        if constant and c.constant:
            continue
        if c.kind == "conv":
            proc = Conv(weight=c.weight, num_message_bits=c.num_message_bits, name=c.name, **c.conv)
            model = P.ConvModelFixed if fixed and c.bound < 2 ** (ACC_BITS - 1) else P.ConvModelFloat
        elif c.kind == "dense":
            proc, model = Dense(weights=c.weight, num_message_bits=c.num_message_bits, name=c.name), PyDenseModelFloat
        else:
            proc = Sparse(weights=c.weight, num_message_bits=c.num_message_bits, name=c.name)
            model = PySparseModelFloat
        lnet.connections[c.name] = proc
        lnet.models[id(proc)] = model
        src = lnet.populations.get(c.source)
        if c.delay:
            src = _delay(lnet, src, c.source, plan.pop(c.source).shape, c.delay, fixed, c.source in sources)
        if src is None:  # build(source=False): the user connects their own source to input_ports
            lnet.input_ports.setdefault(c.source, []).append(proc.s_in)
        else:
            out = src.s_out
            if c.kind != "conv" and len(out.shape) > 1:
                out = out.flatten()
            out.connect(proc.s_in)
            if c.source in sources and not c.delay:
                lnet.input_ports.setdefault(c.source, []).append(proc.s_in)
        target = lnet.populations[c.target]
        a_out = proc.a_out if c.kind == "conv" else proc.a_out.reshape(target.a_in.shape)
        a_out.connect(target.a_in)
    lnet.output_ports = {o: lnet.populations[o].s_out for o in plan.outputs}
    return lnet


def build(net_or_path: Network | str | os.PathLike, mode: str = "fixed", *, weight_bits: int | None = None,
          v_init: float | None = None, steps: int = 0, rec_at: Sequence[int] = (), source: bool = True,
          input_max: int | None = None, input_values: dict[str, np.ndarray] | None = None,
          samples: int = 1, constant_input: bool = False) -> LavaNet:
    """Lava processes for a Network or a `.lava` file (FormatError before any process is built); see
    build_plan for steps, rec_at, input_values (Lava layout), samples and constant_input."""
    net = lavafile.load(net_or_path) if not isinstance(net_or_path, Network) else net_or_path
    plan = make_plan(net.with_v_init(v_init), mode, weight_bits, input_max)
    return build_plan(plan, steps=steps, rec_at=rec_at, source=source, input_values=input_values,
                      samples=samples, constant_input=constant_input)


