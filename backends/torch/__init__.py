"""The torch backend (`snnc.backends.torch`, backend name "torch"): the NumPy reference's semantics on CPU or CUDA.

    from snnc.backends import get_backend
    res = get_backend("torch").simulate(net, x, [32, 64, 128], mode="fixed", device="cuda")

The same network semantics as the NumPy simulator (docs/neurons.md): every layer op, IF / memory IF / SignedIF
neurons, V(0), reset by subtraction, direct / rate / explicit encoding, float32 (within 1e-5 of NumPy while no
spike flips) and fixed point (bit-exact). How it runs: `snnc.backends.torch.sim`. torch is an optional extra
(`pip install 'snnc[torch]'`), imported only when a simulation starts.
"""

from __future__ import annotations

import os
from typing import Any

# Idle OpenMP threads of torch's CPU kernels sleep instead of spinning (read when torch loads, so set before the
# first `import torch`): spinning threads on a shared or oversubscribed machine made a 2-thread run 7-12x slower
# than a 1-thread one (digits, fixed point, load 15 on 2 cores); passive, the two took the same time.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from snnc.backends import Backend, SimResult, register_backend
from snnc.ir.errors import SnncError
from snnc.ir.network import Network
from snnc.ir.options import SimOptions

__all__ = ["TorchBackend", "require_torch"]

INSTALL = "pip install 'snnc[torch]'"


def require_torch() -> Any:
    """The torch module, or SnncError saying how to install it."""
    try:
        import torch
    except ImportError:
        raise SnncError(f"backend 'torch' needs PyTorch, which is not installed: {INSTALL}") from None
    return torch


@register_backend("torch")
class TorchBackend(Backend):
    """Layer-by-layer time-batched simulation in torch: float32 or exact fixed point, on CPU or CUDA.

    Uses SimOptions.device (cpu, cuda, cuda:N), threads (CPU), max_bytes (time chunks), progress; no
    backend-specific extras (the per-layer error recording is the NumPy simulator's).
    """

    def run(self, net: Network, x: Any, ts: list[int], options: SimOptions) -> SimResult:
        require_torch()
        from snnc.backends.torch.sim import simulate

        return simulate(net, x, ts, options)
