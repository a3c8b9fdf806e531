"""The NumPy reference simulator (`snnc.backends.numpy`, backend name "numpy").

Semantics: docs/neurons.md. How it runs (time chunks, batched convolutions, the fixed-point order of operations
every other backend must match bit for bit): `snnc.backends.numpy.sim`. Documentation: docs/backends.md.

    from snnc.backends import get_backend
    res = get_backend("numpy").simulate(net, x, [32, 64, 128], mode="float")
    res.outputs[64]["head"]          # (B, *shape) mean output over the first 64 steps

Extra keyword arguments of `simulate` beyond the `Backend` interface: `encoding` ("direct", "rate" or
"explicit": x then has a time axis, (T, B, *input shape), and its values are the input layer's out(t)),
`max_bytes` (memory budget of the time-chunked buffers, default 1 GiB; chunks are usually smaller, see
`ops.CALL_BYTES`), `progress` (tqdm bar; None: only on a
terminal), `threads` (default: the CPUs this process may use), `weight_bits` (fixed point; default
`fixedpoint.DEFAULT_WEIGHT_BITS`).
"""

from __future__ import annotations

from typing import Any, Sequence

from snnc.backends import Backend, SimResult, register_backend
from snnc.compiler.network import Network

from .sim import DEFAULT_MAX_BYTES, clear_cache, rate_limit_forward, simulate

__all__ = ["NumpyBackend", "simulate", "rate_limit_forward", "clear_cache", "DEFAULT_MAX_BYTES"]


@register_backend("numpy")
class NumpyBackend(Backend):
    """Reference simulator: float32 or exact fixed point, any T in memory bounded by `max_bytes`."""

    def simulate(self, net: Network, x: Any, T: int | Sequence[int], *, mode: str = "float",
                 v_init: float | None = None, decode: str = "membrane", seed: int = 0, encoding: str | None = None,
                 max_bytes: int = DEFAULT_MAX_BYTES, progress: bool | None = None, threads: int | None = None,
                 weight_bits: int | None = None) -> SimResult:
        return simulate(net, x, T, mode=mode, v_init=v_init, decode=decode, seed=seed, encoding=encoding,
                        max_bytes=max_bytes, progress=progress, threads=threads, weight_bits=weight_bits)

    rate_limit_forward = staticmethod(rate_limit_forward)
