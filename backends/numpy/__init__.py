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

from typing import Any

from snnc.backends import Backend, SimResult, register_backend
from snnc.ir.network import Network
from snnc.ir.options import SimOptions

from snnc.backends.numpy.sim import DEFAULT_MAX_BYTES, clear_cache, rate_limit_forward, simulate

__all__ = ["NumpyBackend", "simulate", "rate_limit_forward", "clear_cache", "DEFAULT_MAX_BYTES"]


@register_backend("numpy")
class NumpyBackend(Backend):
    """Reference simulator: float32 or exact fixed point, any T in memory bounded by `max_bytes`.

    Backend-specific options (SimOptions.extra): record_layers, on_checkpoint (the per-layer error analysis),
    constant_input (default True; False: the per-step path, see sim.simulate), event ("auto", "on", "off": the
    event-driven synapses, backends/numpy/event.py).
    """

    extra_options = frozenset({"record_layers", "on_checkpoint", "constant_input", "event"})

    def run(self, net: Network, x: Any, ts: list[int], options: SimOptions) -> SimResult:
        self.require_cpu(self.name, options)
        o = options
        return simulate(net, x, ts, mode=o.mode, v_init=o.v_init, decode=o.decode, seed=o.seed,
                        encoding=o.encoding, max_bytes=o.max_bytes or DEFAULT_MAX_BYTES, progress=o.progress,
                        threads=o.threads, weight_bits=o.weight_bits, **o.extra)

    rate_limit_forward = staticmethod(rate_limit_forward)
