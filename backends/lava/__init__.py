"""The Lava backend (`snnc.backends.lava`, backend name "lava"): the Network as lava-nc processes.

    from snnc.backends.lava import build
    lnet = build("net.lava", mode="fixed")          # processes, connected; lnet.input_ports / output_ports
    lnet.run(40); lnet.populations["head"].acc.get(); lnet.stop()

    from snnc.backends import get_backend
    res = get_backend("lava").simulate(net, x, 32, mode="fixed")   # the NumPy reference's SimResult

lava-nc (0.10.0: Python 3.10, numpy < 2, networkx <= 2.8.7) is imported lazily: this package imports without it
(the plan in plan.py needs numpy and scipy only); `build`, `simulate` and `get_backend("lava")` raise SnncError
with the install line when it is missing. Documentation: docs/backend_lava.md.
"""

from __future__ import annotations

import importlib
import sys
from typing import Any, Sequence

from snnc.backends import Backend, SimResult, register_backend
from snnc.ir.errors import SnncError
from snnc.ir.network import Network
from snnc.ir.options import SimOptions

INSTALL = ('lava-nc is not installed; the Lava backend needs it: pip install "snnc[lava]" in a Python 3.10 '
           'environment with "numpy<2" "networkx==2.8.7" (README, docs/backend_lava.md)')


def require_lava() -> None:
    """Import lava-nc; SnncError with the install line when it cannot be imported.

    lava-nc 0.10.0 calls multiprocessing.set_start_method("fork") at import, which raises once anything (tqdm's
    lock, the NumPy simulator's progress bar) has fixed the start method: tolerated here when that is "fork".
    """
    if "lava.magma.core.process.process" in sys.modules:
        return
    import multiprocessing as mp

    original = mp.set_start_method

    def tolerant(method, force=False):
        if not force and mp.get_start_method(allow_none=True) == method:
            return
        original(method, force=force)

    mp.set_start_method = tolerant
    try:
        importlib.import_module("lava.magma.core.process.process")
    except ImportError as exc:
        raise SnncError(f"{INSTALL} [{exc.__class__.__name__}: {exc}]") from None
    except RuntimeError as exc:
        raise SnncError(f"lava-nc needs the 'fork' multiprocessing start method, this process uses "
                        f"{mp.get_start_method(allow_none=True)!r}: {exc}") from None
    finally:
        mp.set_start_method = original


def build(net_or_path, mode: str = "fixed", **kwargs: Any):
    """The Network (or `.lava` file) as connected Lava processes: `builder.LavaNet` (see builder.build)."""
    from snnc.ir import lavafile

    net = net_or_path if isinstance(net_or_path, Network) else lavafile.load(net_or_path)  # FormatError first
    require_lava()
    from snnc.backends.lava.builder import build as _build

    return _build(net, mode, **kwargs)


@register_backend("lava")
class LavaBackend(Backend):
    """lava-nc's CPU simulator (Loihi2SimCfg): float or bit-exact fixed point, delay-aligned with the reference."""

    def __init__(self) -> None:
        require_lava()

    extra_options = frozenset({"constant_input"})

    def run(self, net: Network, x: Any, ts: list[int], options: SimOptions) -> SimResult:
        """As the NumPy reference's simulate (direct encoding only); progress: a bar over Lava steps (None: only
        on a terminal); SimOptions.extra constant_input (default True): the image's synaptic sums as a constant
        current (False: per step). Lava's CPU simulator has no thread or memory budget to set."""
        self.require_cpu(self.name, options)
        require_lava()
        from snnc.backends.lava.sim import simulate

        o = options
        return simulate(net, x, ts, mode=o.mode, v_init=o.v_init, decode=o.decode, seed=o.seed,
                        weight_bits=o.weight_bits, encoding=o.encoding, progress=o.progress,
                        constant_input=bool(o.extra.get("constant_input", True)))


__all__ = ["build", "LavaBackend", "require_lava", "INSTALL"]
