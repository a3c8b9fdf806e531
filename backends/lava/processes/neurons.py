"""snnc's own Lava processes and their CPU process models (imports lava; load it through `snnc.backends.lava`).

Neurons (docs/neurons.md, one population per connection layer, shape (W, H, C) or (C,)):

    IF         V += z; s = V >= vth; V -= s*vth; out = s                          reset by subtraction
    MemoryIF   as IF, then n = V < 0 and count > 0; V += n*vth; out = s - n; count += out     (memory IF)
    SignedIF   V += z; p = V >= vth; n = V <= -vth_neg; V -= p*vth; V += n*vth_neg; out = p - n    (IBT)
    SignedMemoryIF  V += z; then, in this order on the updated V, with c = count:
               up = V >= vth & c >= 0 (V -= vth); back_up = V < 0 & c > 0 (V += vth);
               dn = V <= -vth_neg & c <= 0 (V += vth_neg); back_dn = V > 0 & c < 0 (V -= vth_neg);
               out = up + back_dn - back_up - dn; count += out              (signed memory neuron)
    Linear     out = z (no spikes); a detection head or a copy layer such as nearest upsampling

with z = a_in + bias (bias per neuron, every step) and V(0) = v_init per neuron. A population fed by the input
image alone gets, instead of synapses from it, a constant input current per sample (`current`, computed once by
the builder) that is added to a_in every active step: the image is the same every step under direct encoding. Each has a float model
(tag "floating_pt": V, vth, bias float32, z = float32(a_in) + bias as in the NumPy reference) and a bit-accurate
fixed-point model (tag "fixed_pt": V, vth, vth_neg, bias int64, the integers of `snnc.ir.fixedpoint`;
spikes and Linear outputs leave as int32 graded messages). MemoryIF's `count` (+1 spikes minus -1 spikes
emitted since the sample's start, 0 <= count <= T) is int32 in both; its -1 spikes need graded messages.

Time gating (the synaptic delay of Lava, docs/backend_lava.md): a local step counter t counts run_spk calls; a
population is idle (discards its input, sends zeros, keeps its state) for its first t_start steps and, when
t_end > 0, after step t_end. t_start is the population's depth (synapse stages from the input), so its active
step k = u - t_start is the NumPy reference's step k. While active it adds its output to `acc` (signed spikes or
z), |s| to `spike_count` (per neuron) and to `spikes[sample]` (the layer's total), and copies `acc` into
rec[sample, i] when k == rec_at[i] (decoding at checkpoints in one run).

Batches: with period P > 0 the run is a sequence of samples of P steps each, u = (t - 1) % P + 1 the step within
sample (t - 1) // P; at the first step of every sample after the first a population resets v to v_init and acc,
spike_count (and MemoryIF's count) to 0. This replaces Var.set between samples, which lava-nc 0.10.0 carries out
one value per message (and Var.get likewise: read `spikes`, a few values, rather than the per-neuron
`spike_count`).

ConstantSource sends `value` every step (direct encoding; with period P, value[sample] of a (samples, *shape)
array). Delay sends what it received `steps` steps earlier (it equalizes depths where branches of different
depth meet at a concat).
"""

from __future__ import annotations

import numpy as np
from lava.magma.core.decorator import implements, requires, tag
from lava.magma.core.model.py.model import PyLoihiProcessModel
from lava.magma.core.model.py.ports import PyInPort, PyOutPort
from lava.magma.core.model.py.type import LavaPyType
from lava.magma.core.process.ports.ports import InPort, OutPort
from lava.magma.core.process.process import AbstractProcess
from lava.magma.core.process.variable import Var
from lava.magma.core.resources import CPU
from lava.magma.core.sync.protocols.loihi_protocol import LoihiProtocol

FIXED_MSG = np.int32  # graded spike / value messages in fixed point
FIXED_STATE = np.int64  # membrane, thresholds, bias, accumulators in fixed point


# ---- processes -------------------------------------------------------------------------------------------------

class ConstantSource(AbstractProcess):
    """Sends `value` (the image, or its integers in fixed point) on s_out every step; with period > 0, `value`
    is (samples, *shape) and sample s = (t - 1) // period is sent during its period."""

    def __init__(self, *, value: np.ndarray, period: int = 0, name: str | None = None) -> None:
        super().__init__(name=name)
        value = np.asarray(value)
        shape = value.shape[1:] if period else value.shape
        self.s_out = OutPort(shape=shape)
        self.value = Var(shape=value.shape, init=value)
        self.period = Var(shape=(1,), init=int(period))
        self.t = Var(shape=(1,), init=0)


class Delay(AbstractProcess):
    """s_out(t) = s_in(t - steps), zeros for the first `steps` steps."""

    def __init__(self, *, shape: tuple[int, ...], steps: int, name: str | None = None) -> None:
        super().__init__(name=name)
        if steps < 1:
            raise ValueError("Delay needs steps >= 1")
        self.s_in = InPort(shape=shape)
        self.s_out = OutPort(shape=shape)
        self.buf = Var(shape=(steps,) + tuple(shape), init=0)
        self.t = Var(shape=(1,), init=0)


class Population(AbstractProcess):
    """Common ports and Vars of IF, SignedIF and Linear (see the module docstring)."""

    def __init__(self, *, shape: tuple[int, ...], bias: np.ndarray | float = 0, t_start: int = 0, t_end: int = 0,
                 rec_at: np.ndarray | None = None, period: int = 0, samples: int = 1, name: str | None = None,
                 current: np.ndarray | None = None, **kwargs) -> None:
        super().__init__(name=name, **kwargs)
        shape = tuple(int(s) for s in shape)
        self.a_in = InPort(shape=shape)
        self.s_out = OutPort(shape=shape)
        self.bias = Var(shape=shape, init=np.broadcast_to(bias, shape).copy())
        declare_schedule(self, shape, current, t_start, t_end, period, rec_at, samples)


def declare_schedule(proc: AbstractProcess, shape: tuple[int, ...], current: np.ndarray | None, t_start: int,
                     t_end: int, period: int, rec_at: np.ndarray | None, samples: int) -> None:
    """The Vars that _PopulationModel's time gating, per-sample reset and recording read, on `proc` (a
    Population or another process run by a _PopulationModel subclass); shape is that of its output."""
    rec_at = np.asarray([0] if rec_at is None else rec_at, dtype=np.int64)
    samples = max(1, int(samples))
    # constant input current per sample, (samples or 1, *input shape), added to a_in while active; (1,) zero: none
    cur = np.zeros(1) if current is None else np.asarray(current)
    proc.current = Var(shape=cur.shape, init=cur)
    proc.t = Var(shape=(1,), init=0)
    proc.t_start = Var(shape=(1,), init=int(t_start))
    proc.t_end = Var(shape=(1,), init=int(t_end))
    proc.period = Var(shape=(1,), init=int(period))
    proc.acc = Var(shape=shape, init=0)
    proc.rec_at = Var(shape=rec_at.shape, init=rec_at)
    proc.rec = Var(shape=(samples,) + rec_at.shape + shape, init=0)
    proc.spikes = Var(shape=(samples,), init=0)  # spikes per sample (a process without spikes leaves it 0)


class Linear(Population):
    """A layer without neurons: out(t) = z(t) = a_in(t) + bias; acc is the accumulated membrane of the head."""


class IF(Population):
    """Integrate-and-fire, reset by subtraction; vth and v (initial potential v_init) per neuron."""

    def __init__(self, *, shape: tuple[int, ...], vth: np.ndarray | float, v_init: np.ndarray | float = 0,
                 **kwargs) -> None:
        super().__init__(shape=shape, **kwargs)
        shape = self.a_in.shape
        self.vth = Var(shape=shape, init=np.broadcast_to(vth, shape).copy())
        self.v = Var(shape=shape, init=np.broadcast_to(v_init, shape).copy())
        self.v_init = Var(shape=shape, init=np.broadcast_to(v_init, shape).copy())
        self.spike_count = Var(shape=shape, init=0)


class MemoryIF(IF):
    """Memory IF: as IF, and a -1 spike (taking back an earlier +1, V += vth) where V < 0 and the neuron has
    emitted more +1 than -1 spikes; `count` holds that difference per neuron (docs/neurons.md, "Memory IF")."""

    def __init__(self, *, shape: tuple[int, ...], vth: np.ndarray | float, **kwargs) -> None:
        super().__init__(shape=shape, vth=vth, **kwargs)
        self.count = Var(shape=self.a_in.shape, init=0)


class SignedMemoryIF(IF):
    """Signed memory neuron: the SignedIF's thresholds, and a spike of either sign first takes back one of the
    other sign (docs/neurons.md, "Signed memory neuron"); `count` holds +1 minus -1 spikes per neuron."""

    def __init__(self, *, shape: tuple[int, ...], vth: np.ndarray | float, vth_neg: np.ndarray | float,
                 **kwargs) -> None:
        super().__init__(shape=shape, vth=vth, **kwargs)
        self.vth_neg = Var(shape=self.a_in.shape, init=np.broadcast_to(vth_neg, self.a_in.shape).copy())
        self.count = Var(shape=self.a_in.shape, init=0)


class SignedIF(IF):
    """Signed neuron with imbalanced threshold (IBT): +1 at V >= vth, -1 at V <= -vth_neg (= -vth/alpha)."""

    def __init__(self, *, shape: tuple[int, ...], vth: np.ndarray | float, vth_neg: np.ndarray | float,
                 **kwargs) -> None:
        super().__init__(shape=shape, vth=vth, **kwargs)
        self.vth_neg = Var(shape=self.a_in.shape, init=np.broadcast_to(vth_neg, self.a_in.shape).copy())


# ---- models ----------------------------------------------------------------------------------------------------

class _SourceModel(PyLoihiProcessModel):
    def run_spk(self) -> None:
        self.t[0] += 1
        period = int(self.period[0])
        if not period:
            self.s_out.send(self.value)
            return
        sample = min((int(self.t[0]) - 1) // period, self.value.shape[0] - 1)
        self.s_out.send(self.value[sample])


@implements(proc=ConstantSource, protocol=LoihiProtocol)
@requires(CPU)
@tag("floating_pt")
class PyConstantSourceFloat(_SourceModel):
    s_out: PyOutPort = LavaPyType(PyOutPort.VEC_DENSE, float)
    value: np.ndarray = LavaPyType(np.ndarray, float)
    period: np.ndarray = LavaPyType(np.ndarray, np.int64)
    t: np.ndarray = LavaPyType(np.ndarray, np.int64)


@implements(proc=ConstantSource, protocol=LoihiProtocol)
@requires(CPU)
@tag("fixed_pt")
class PyConstantSourceFixed(_SourceModel):
    s_out: PyOutPort = LavaPyType(PyOutPort.VEC_DENSE, FIXED_MSG, precision=24)
    value: np.ndarray = LavaPyType(np.ndarray, FIXED_MSG, precision=24)
    period: np.ndarray = LavaPyType(np.ndarray, np.int64)
    t: np.ndarray = LavaPyType(np.ndarray, np.int64)


class _DelayModel(PyLoihiProcessModel):
    def run_spk(self) -> None:
        x = self.s_in.recv()
        k = int(self.t[0]) % self.buf.shape[0]
        out = self.buf[k].copy()
        self.buf[k] = x
        self.t[0] += 1
        self.s_out.send(out)


@implements(proc=Delay, protocol=LoihiProtocol)
@requires(CPU)
@tag("floating_pt")
class PyDelayFloat(_DelayModel):
    s_in: PyInPort = LavaPyType(PyInPort.VEC_DENSE, float)
    s_out: PyOutPort = LavaPyType(PyOutPort.VEC_DENSE, float)
    buf: np.ndarray = LavaPyType(np.ndarray, float)
    t: np.ndarray = LavaPyType(np.ndarray, np.int64)


@implements(proc=Delay, protocol=LoihiProtocol)
@requires(CPU)
@tag("fixed_pt")
class PyDelayFixed(_DelayModel):
    s_in: PyInPort = LavaPyType(PyInPort.VEC_DENSE, FIXED_MSG, precision=24)
    s_out: PyOutPort = LavaPyType(PyOutPort.VEC_DENSE, FIXED_MSG, precision=24)
    buf: np.ndarray = LavaPyType(np.ndarray, FIXED_MSG, precision=24)
    t: np.ndarray = LavaPyType(np.ndarray, np.int64)


class _PopulationModel(PyLoihiProcessModel):
    """Gating, per-sample reset, accumulation and recording; subclasses define `fire(z) -> out`."""

    fixed = False

    def z(self, a: np.ndarray) -> np.ndarray:
        if self.fixed:
            return np.asarray(a).astype(FIXED_STATE) + self.bias
        return np.asarray(a).astype(np.float32) + self.bias

    def fire(self, z: np.ndarray) -> np.ndarray:
        return z

    def reset(self) -> None:
        self.acc[...] = 0

    def run_spk(self) -> None:
        a = self.a_in.recv()
        self.t[0] += 1
        t, start, end, period = int(self.t[0]), int(self.t_start[0]), int(self.t_end[0]), int(self.period[0])
        sample, u = ((t - 1) // period, (t - 1) % period + 1) if period else (0, t)
        if u == 1 and sample > 0:
            self.reset()
        if u <= start or (end > 0 and u > end):
            self.s_out.send(np.zeros(self.s_out.shape))
            return
        if self.current.ndim > 1:  # the constant current replaces the synapses from the input (builder)
            a = np.asarray(a) + self.current[min(sample, self.current.shape[0] - 1)]
        out = self.fire(self.z(a))
        self.acc += out
        if sample < self.spikes.shape[0]:
            if hasattr(self, "spike_count"):
                self.spikes[sample] += np.count_nonzero(out)
            for i in np.flatnonzero(self.rec_at == u - start):
                self.rec[sample, i] = self.acc
        self.s_out.send(out)


class _IFMixin:
    def reset(self) -> None:
        self.acc[...] = 0
        self.v[...] = self.v_init
        self.spike_count[...] = 0

    def fire(self, z: np.ndarray) -> np.ndarray:
        self.v += z
        pos = self.v >= self.vth
        self.v -= np.where(pos, self.vth, 0).astype(self.v.dtype)
        self.spike_count += pos
        return pos.astype(np.int8)


class _SignedIFMixin(_IFMixin):
    def fire(self, z: np.ndarray) -> np.ndarray:
        self.v += z
        pos = self.v >= self.vth
        neg = self.v <= -self.vth_neg  # exclusive with pos since vth > 0
        self.v -= np.where(pos, self.vth, 0).astype(self.v.dtype)
        self.v += np.where(neg, self.vth_neg, 0).astype(self.v.dtype)
        self.spike_count += pos | neg
        return pos.astype(np.int8) - neg.astype(np.int8)


class _MemoryIFMixin(_IFMixin):
    def reset(self) -> None:
        super().reset()
        self.count[...] = 0

    def fire(self, z: np.ndarray) -> np.ndarray:
        self.v += z
        pos = self.v >= self.vth
        self.v -= np.where(pos, self.vth, 0).astype(self.v.dtype)
        neg = (self.v < 0) & (self.count > 0)  # after a +1 spike v >= 0: exclusive with pos
        self.v += np.where(neg, self.vth, 0).astype(self.v.dtype)
        out = pos.astype(np.int8) - neg.astype(np.int8)
        self.count += out
        self.spike_count += pos | neg
        return out


class _SignedMemoryIFMixin(_MemoryIFMixin):
    def neg_level(self) -> np.ndarray | int:
        """The level the negative side counts from: 0 (a graded population has its own, neg_level)."""
        return 0

    def fire(self, z: np.ndarray) -> np.ndarray:
        self.v += z
        c, dt = self.count, self.v.dtype
        level = self.neg_level()
        up = (self.v >= self.vth) & (c >= 0)
        self.v -= np.where(up, self.vth, 0).astype(dt)
        back_up = (self.v < 0) & (c > 0)
        self.v += np.where(back_up, self.vth, 0).astype(dt)
        dn = (self.v <= level - self.vth_neg) & (c <= 0) & ~up  # a level > 0 may lie above v - vth after an up
        self.v += np.where(dn, self.vth_neg, 0).astype(dt)
        back_dn = (self.v > level) & (c < 0)
        self.v -= np.where(back_dn, self.vth_neg, 0).astype(dt)
        out = (up | back_dn).astype(np.int8) - (back_up | dn).astype(np.int8)
        self.count += out
        self.spike_count += out != 0
        return out


def _common(fixed: bool) -> dict:
    state = FIXED_STATE if fixed else np.float32
    return {
        "a_in": LavaPyType(PyInPort.VEC_DENSE, FIXED_STATE if fixed else float),
        "s_out": LavaPyType(PyOutPort.VEC_DENSE, FIXED_MSG if fixed else float, precision=24),
        "bias": LavaPyType(np.ndarray, state), "t": LavaPyType(np.ndarray, np.int64),
        "current": LavaPyType(np.ndarray, FIXED_STATE if fixed else float),
        "t_start": LavaPyType(np.ndarray, np.int64), "t_end": LavaPyType(np.ndarray, np.int64),
        "period": LavaPyType(np.ndarray, np.int64),
        "acc": LavaPyType(np.ndarray, FIXED_STATE if fixed else np.float64),
        "rec_at": LavaPyType(np.ndarray, np.int64),
        "rec": LavaPyType(np.ndarray, FIXED_STATE if fixed else np.float64),
        "spikes": LavaPyType(np.ndarray, np.int64),
        "vth": LavaPyType(np.ndarray, state), "vth_neg": LavaPyType(np.ndarray, state),
        "v": LavaPyType(np.ndarray, state), "v_init": LavaPyType(np.ndarray, state),
        "spike_count": LavaPyType(np.ndarray, np.int64),
        "count": LavaPyType(np.ndarray, np.int32),
    }


def _model(proc: type, mixin: type | None, fixed: bool, names: tuple[str, ...]) -> type:
    types = _common(fixed)
    attrs = {n: types[n] for n in names}
    attrs["__annotations__"] = {n: (PyInPort if n == "a_in" else PyOutPort if n == "s_out" else np.ndarray)
                                for n in names}
    attrs["fixed"] = fixed
    attrs["__module__"] = __name__
    bases = ((mixin,) if mixin else ()) + (_PopulationModel,)
    name = f"Py{proc.__name__}{'Fixed' if fixed else 'Float'}"
    cls = type(name, bases, attrs)
    cls = tag("fixed_pt" if fixed else "floating_pt")(requires(CPU)(implements(proc=proc,
                                                                               protocol=LoihiProtocol)(cls)))
    globals()[name] = cls
    return cls


_BASE = ("a_in", "s_out", "bias", "current", "t", "t_start", "t_end", "period", "acc", "rec_at", "rec", "spikes")
for _fixed in (False, True):
    _model(Linear, None, _fixed, _BASE)
    _model(IF, _IFMixin, _fixed, _BASE + ("vth", "v", "v_init", "spike_count"))
    _model(MemoryIF, _MemoryIFMixin, _fixed, _BASE + ("vth", "v", "v_init", "spike_count", "count"))
    _model(SignedIF, _SignedIFMixin, _fixed, _BASE + ("vth", "vth_neg", "v", "v_init", "spike_count"))
    _model(SignedMemoryIF, _SignedMemoryIFMixin, _fixed,
           _BASE + ("vth", "vth_neg", "v", "v_init", "spike_count", "count"))

MODELS = {(p, f): globals()[f"Py{p.__name__}{'Fixed' if f else 'Float'}"]
          for p in (Linear, IF, MemoryIF, SignedIF, SignedMemoryIF) for f in (False, True)}
MODELS.update({(ConstantSource, False): PyConstantSourceFloat, (ConstantSource, True): PyConstantSourceFixed,
               (Delay, False): PyDelayFloat, (Delay, True): PyDelayFixed})
