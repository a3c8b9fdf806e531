"""The graded signed memory neuron as a Lava process (`--leaky graded`, docs/neurons.md "Graded signed memory
neuron"): the SignedMemoryIF's update with vth_neg = theta_n and the negative side measured from its level v_level
(r), and what a spike sends is graded: s * pay_pos where
it moves the count on its positive side (up, back_up), s * pay_neg on its negative side (dn, back_dn), i.e. where
count_before + count_after = 2 count_before + s < 0. Fixed point: the integer payloads of `snnc.ir.fixedpoint`
(+P and N_c, int32 graded messages, as Loihi 2's graded spikes); float: 1 and alpha theta_n / theta (units of theta).
"""

from __future__ import annotations

import numpy as np
from lava.magma.core.decorator import implements, requires, tag
from lava.magma.core.model.py.ports import PyInPort, PyOutPort
from lava.magma.core.model.py.type import LavaPyType
from lava.magma.core.process.variable import Var
from lava.magma.core.resources import CPU
from lava.magma.core.sync.protocols.loihi_protocol import LoihiProtocol

from snnc.backends.lava.processes import neurons as N


class GradedSignedMemoryIF(N.SignedMemoryIF):
    """Signed memory neuron with its own negative threshold (vth_neg = theta_n) and graded spikes."""

    def __init__(self, *, shape: tuple[int, ...], pay_pos: np.ndarray | float, pay_neg: np.ndarray | float,
                 neg_level: np.ndarray | float = 0, **kwargs) -> None:
        super().__init__(shape=shape, **kwargs)
        self.pay_pos = Var(shape=self.a_in.shape, init=np.broadcast_to(pay_pos, self.a_in.shape).copy())
        self.pay_neg = Var(shape=self.a_in.shape, init=np.broadcast_to(pay_neg, self.a_in.shape).copy())
        # the negative side's level r (Neuron.neg_level): dn at v <= r - vth_neg (not after an up), back_dn at v > r
        self.v_level = Var(shape=self.a_in.shape, init=np.broadcast_to(neg_level, self.a_in.shape).copy())


class _GradedMixin(N._SignedMemoryIFMixin):
    def neg_level(self) -> np.ndarray:
        return self.v_level
    def fire(self, z: np.ndarray) -> np.ndarray:
        before = self.count.copy()
        s = super().fire(z)
        negative = 2 * before.astype(np.int64) + s < 0
        return s * np.where(negative, self.pay_neg, self.pay_pos)


def _graded_model(fixed: bool) -> type:
    msg = N.FIXED_MSG if fixed else np.float32
    types = {**N._common(fixed), "pay_pos": LavaPyType(np.ndarray, msg), "pay_neg": LavaPyType(np.ndarray, msg),
             "v_level": N._common(fixed)["vth"]}
    names = N._BASE + ("vth", "vth_neg", "v", "v_init", "spike_count", "count", "pay_pos", "pay_neg", "v_level")
    attrs = {n: types[n] for n in names}
    attrs["__annotations__"] = {n: (PyInPort if n == "a_in" else PyOutPort if n == "s_out" else np.ndarray)
                                for n in names}
    attrs["fixed"] = fixed
    attrs["__module__"] = __name__
    name = f"PyGradedSignedMemoryIF{'Fixed' if fixed else 'Float'}"
    cls = type(name, (_GradedMixin, N._PopulationModel), attrs)
    cls = tag("fixed_pt" if fixed else "floating_pt")(requires(CPU)(implements(proc=GradedSignedMemoryIF,
                                                                               protocol=LoihiProtocol)(cls)))
    globals()[name] = cls
    return cls


for _fixed in (False, True):
    N.MODELS[(GradedSignedMemoryIF, _fixed)] = _graded_model(_fixed)
