"""The count max-pool as a Lava process (`CountMaxPool`) and its float / fixed-point CPU models (imports lava).

    S += a_in                      running sum of each input (Lava layout (W, H, C) of the pool's input layer)
    M' = window max of S           (kx, ky) windows, strides (sx, sy), no padding (an edge pad routes in front)
    out = M' - M; M = M'           sent on s_out (W', H', C): graded values (-1, 0, 1 after spiking sources)

the recurrence of snnc.ir.countpool, so the sum of the outputs up to step k is the max-pool of the summed inputs.
The time gating, the per-sample reset (S, M and acc to 0), `acc` and `rec` are those of the neuron populations
(neurons.py); there is no bias and no spike counter (a routing layer: the NumPy reference counts no spikes for
it). Fixed point: S, M in int64, bit-exact with the reference's int64 sums; float: S, M in float64 as the
reference, out rounded to float32 as the reference's output (the dtype of its input).
"""

from __future__ import annotations

import numpy as np
from lava.magma.core.decorator import implements, requires, tag
from lava.magma.core.model.py.ports import PyInPort, PyOutPort
from lava.magma.core.model.py.type import LavaPyType
from lava.magma.core.process.ports.ports import InPort, OutPort
from lava.magma.core.process.process import AbstractProcess
from lava.magma.core.process.variable import Var
from lava.magma.core.resources import CPU
from lava.magma.core.sync.protocols.loihi_protocol import LoihiProtocol
from numpy.lib.stride_tricks import sliding_window_view

from snnc.backends.lava.processes.neurons import FIXED_MSG, FIXED_STATE, _PopulationModel, declare_schedule


class CountMaxPool(AbstractProcess):
    """out(t) = M(t) - M(t-1), M the (kernel, strides) window max of the running sums of a_in (in_shape)."""

    def __init__(self, *, shape: tuple[int, ...], in_shape: tuple[int, ...], kernel: tuple[int, int],
                 strides: tuple[int, int], t_start: int = 0, t_end: int = 0, rec_at: np.ndarray | None = None,
                 period: int = 0, samples: int = 1, name: str | None = None,
                 current: np.ndarray | None = None) -> None:
        super().__init__(name=name)
        shape, in_shape = tuple(int(s) for s in shape), tuple(int(s) for s in in_shape)
        self.a_in = InPort(shape=in_shape)
        self.s_out = OutPort(shape=shape)
        self.kernel = Var(shape=(2,), init=np.asarray(kernel, dtype=np.int64))
        self.strides = Var(shape=(2,), init=np.asarray(strides, dtype=np.int64))
        self.sum = Var(shape=in_shape, init=0)
        self.max = Var(shape=shape, init=0)
        declare_schedule(self, shape, current, t_start, t_end, period, rec_at, samples)


class _CountMaxPoolModel(_PopulationModel):
    def z(self, a: np.ndarray) -> np.ndarray:
        return np.asarray(a).astype(FIXED_STATE if self.fixed else np.float64)

    def reset(self) -> None:
        self.acc[...] = 0
        self.sum[...] = 0
        self.max[...] = 0

    def fire(self, z: np.ndarray) -> np.ndarray:
        self.sum += z
        kx, ky = (int(k) for k in self.kernel)
        sx, sy = (int(s) for s in self.strides)
        m = sliding_window_view(self.sum, (kx, ky), axis=(0, 1))[::sx, ::sy].max(axis=(-2, -1))
        out = m - self.max
        self.max[...] = m
        return out if self.fixed else out.astype(np.float32)


def _types(fixed: bool) -> dict:
    state = FIXED_STATE if fixed else np.float64
    return {"a_in": LavaPyType(PyInPort.VEC_DENSE, FIXED_STATE if fixed else float),
            "s_out": LavaPyType(PyOutPort.VEC_DENSE, FIXED_MSG if fixed else float, precision=24),
            "current": LavaPyType(np.ndarray, FIXED_STATE if fixed else float),
            "kernel": LavaPyType(np.ndarray, np.int64), "strides": LavaPyType(np.ndarray, np.int64),
            "sum": LavaPyType(np.ndarray, state), "max": LavaPyType(np.ndarray, state),
            "t": LavaPyType(np.ndarray, np.int64), "t_start": LavaPyType(np.ndarray, np.int64),
            "t_end": LavaPyType(np.ndarray, np.int64), "period": LavaPyType(np.ndarray, np.int64),
            "acc": LavaPyType(np.ndarray, state), "rec_at": LavaPyType(np.ndarray, np.int64),
            "rec": LavaPyType(np.ndarray, state), "spikes": LavaPyType(np.ndarray, np.int64)}


def _model(fixed: bool) -> type:
    """The float or fixed-point model class (built as neurons.py builds its models)."""
    attrs = _types(fixed)
    attrs["__annotations__"] = {k: (PyInPort if k == "a_in" else PyOutPort if k == "s_out" else np.ndarray)
                                for k in attrs}
    attrs["fixed"] = fixed
    attrs["__module__"] = __name__
    name = f"PyCountMaxPool{'Fixed' if fixed else 'Float'}"
    cls = type(name, (_CountMaxPoolModel,), attrs)
    cls = tag("fixed_pt" if fixed else "floating_pt")(requires(CPU)(implements(proc=CountMaxPool,
                                                                               protocol=LoihiProtocol)(cls)))
    globals()[name] = cls
    return cls


MODELS = {(CountMaxPool, fixed): _model(fixed) for fixed in (False, True)}
