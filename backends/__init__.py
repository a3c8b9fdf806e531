"""Backends: one registry, one small interface. The NumPy simulator is the reference the others are tested against.

A backend is a class registered with `@register_backend("name")` that implements `run(net, x, ts, options)`
for every field of `SimOptions` (refusing a value it cannot honour with one line); callers use
`simulate(net, x, T, options=None, **fields)`. Heavy dependencies (a C compiler, lava-nc, torch) are imported
lazily inside a backend so `import snnc.backends` stays cheap.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from collections import OrderedDict
from typing import Any, Callable, Sequence

import numpy as np

from snnc.ir.errors import SnncError
from snnc.ir.limits import check_work
from snnc.ir.network import Network
from snnc.ir.options import SimOptions, checkpoints, sim_options
from snnc.ir.validate import network_macs

__all__ = ["Backend", "SimResult", "checkpoints", "get_backend", "register_backend"]

_REGISTRY: dict[str, type] = {}
# Modules that register backends when imported; imported on first lookup so optional deps stay optional.
_BUILTIN_MODULES = {"numpy": "snnc.backends.numpy", "c": "snnc.backends.c", "lava": "snnc.backends.lava",
                    "torch": "snnc.backends.torch"}


@dataclass
class SimResult:
    """What one simulation run returns.

    outputs[T][layer_name]: decoded value (batch, *layer.shape) of each output layer after T steps, for every
    requested checkpoint T. spike_counts[layer_name]: (batch,) total spikes (|s|, both signs) of each neuron layer
    over the whole run (max T). neurons[layer_name]: neurons in that layer per sample.
    """

    outputs: dict[int, dict[str, np.ndarray]]
    spike_counts: dict[str, np.ndarray]
    neurons: dict[str, int]
    steps: int
    extra: dict = field(default_factory=dict)

    def firing_rates(self) -> dict[str, float]:
        """Mean spikes per neuron per step, over the batch, for each neuron layer."""
        return {k: float(v.mean()) / (self.neurons[k] * self.steps) for k, v in self.spike_counts.items()}


class Backend:
    """Interface: simulate `net` on a batch `x` (B, *input shape) for max(T) steps, decoding at each T.

    Subclasses implement `run`; `extra_options` names the backend-specific switches (SimOptions.extra) it
    understands: any other extra is refused, so no option is silently dropped.
    """

    name = "base"
    extra_options: frozenset[str] = frozenset()

    def simulate(self, net: Network, x: np.ndarray, T: int | Sequence[int], options: SimOptions | None = None,
                 **fields) -> SimResult:
        opts = sim_options(options, **fields)
        unknown = sorted(set(opts.extra) - set(self.extra_options))
        if unknown:
            raise SnncError(f"backend {self.name!r} does not support {', '.join(unknown)}")
        ts = checkpoints(T)
        check_work(network_macs(net), ts[-1], f"backend {self.name!r}")  # before a run of hours, not after
        return self.run(net, x, ts, opts)

    def run(self, net: Network, x: np.ndarray, ts: list[int], options: SimOptions) -> SimResult:
        raise NotImplementedError

    @staticmethod
    def require_cpu(name: str, options: SimOptions) -> None:
        if options.device != "cpu":
            raise SnncError(f"backend {name!r} runs on the CPU only (--device {options.device}); "
                            "use --backend torch for a GPU")


def register_backend(name: str) -> Callable[[type], type]:
    def deco(cls: type) -> type:
        if name in _REGISTRY and _REGISTRY[name] is not cls:
            raise ValueError(f"backend {name!r} registered twice")
        cls.name = name
        _REGISTRY[name] = cls
        return cls
    return deco


def get_backend(name: str) -> Backend:
    """A fresh instance of the named backend; SnncError with the reason when it cannot be loaded."""
    if name not in _REGISTRY and name in _BUILTIN_MODULES:
        try:
            importlib.import_module(_BUILTIN_MODULES[name])
        except ImportError as exc:
            raise SnncError(f"backend {name!r} is not available: {exc}") from None
    if name not in _REGISTRY:
        raise SnncError(f"unknown backend {name!r}; available: {', '.join(sorted(_BUILTIN_MODULES))}")
    return _REGISTRY[name]()


def lru_cached(cache: OrderedDict, key: Any, build: Callable[[], Any], size: int) -> Any:
    """cache[key], built by build() on a miss; the least recently used entries beyond `size` are dropped (the
    backends' per-network plans hold weights and sessions, so only a few networks stay)."""
    found = cache.get(key)
    if found is None:
        found = cache[key] = build()
        while len(cache) > size:
            cache.popitem(last=False)
    else:
        cache.move_to_end(key)
    return found


def rate_spikes(x: np.ndarray, rng: np.random.Generator, steps: int) -> np.ndarray:
    """Rate-encoded input spikes for `steps` steps, (steps, *x.shape) int8: one rng.random draw of the whole batch
    per step, in step order (docs/neurons.md, "Input encoding"), so every backend that draws from the same
    generator sees the same spikes."""
    out = np.empty((steps,) + x.shape, np.int8)
    for k in range(steps):
        np.less(rng.random(x.shape), x, out=out[k].view(np.bool_))
    return out
