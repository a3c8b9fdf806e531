"""Lava vs the NumPy reference on any Network: `compare_with_numpy(net, x, T)` (used by the tests; call it on
a compiled model too). Fixed point must agree bit for bit (spike counts and raw output sums); float mode must
give the same spike counts and outputs equal to float rounding (rtol)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from snnc.backends import SimResult, checkpoints, get_backend
from snnc.ir.network import Network


@dataclass
class Comparison:
    mode: str
    lava: SimResult
    reference: SimResult
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def check(self) -> "Comparison":
        """AssertionError listing every disagreement."""
        assert self.ok, f"Lava and NumPy disagree ({self.mode}):\n  " + "\n  ".join(self.problems)
        return self


def compare_with_numpy(net: Network, x: Any, T: int | Sequence[int], *, mode: str = "fixed",
                       v_init: float | None = None, weight_bits: int | None = None, rtol: float = 1e-5,
                       atol: float = 1e-6) -> Comparison:
    """Simulate with both backends and list the differences (empty list: they agree)."""
    kw = {} if weight_bits is None else {"weight_bits": weight_bits}
    ref = get_backend("numpy").simulate(net, x, T, mode=mode, v_init=v_init, progress=False, **kw)
    lav = get_backend("lava").simulate(net, x, T, mode=mode, v_init=v_init, **kw)
    cmp = Comparison(mode, lav, ref)
    for name, counts in ref.spike_counts.items():
        got = lav.spike_counts.get(name)
        if got is None or not np.array_equal(got, counts):
            cmp.problems.append(f"spike counts of {name}: lava {got}, numpy {counts}")
    for t in checkpoints(T):
        for name, want in ref.outputs[t].items():
            got = lav.outputs[t][name]
            if mode == "fixed":
                same = (np.array_equal(lav.extra["sums"][t][name], ref.extra["sums"][t][name])
                        and np.array_equal(got, want))
            else:
                same = np.allclose(got, want, rtol=rtol, atol=atol)
            if not same:
                cmp.problems.append(f"output {name} at T={t}: max |diff| {np.abs(got - want).max():.3g}")
    return cmp
