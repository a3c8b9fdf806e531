"""Backends: one registry, one small interface. The NumPy simulator is the reference the others are tested against.

A backend is a class registered with `@register_backend("name")` that implements `simulate`; heavy
dependencies (a C compiler, lava-nc) are imported lazily inside it so `import snnc.backends` stays cheap.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np

from snnc.compiler.errors import SnncError
from snnc.compiler.network import Network

_REGISTRY: dict[str, type] = {}
# Modules that register backends when imported; imported on first lookup so optional deps stay optional.
_BUILTIN_MODULES = {"numpy": "snnc.backends.numpy", "c": "snnc.backends.c", "lava": "snnc.backends.lava"}


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
    """Interface: simulate `net` on a batch `x` (B, *input shape) for max(T) steps, decoding at each T."""

    name = "base"

    def simulate(self, net: Network, x: np.ndarray, T: int | Sequence[int], *, mode: str = "float",
                 v_init: float | None = None, decode: str = "membrane", seed: int = 0) -> SimResult:
        raise NotImplementedError


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


def checkpoints(T: int | Sequence[int]) -> list[int]:
    """Sorted unique positive checkpoints from an int or a sequence of ints."""
    ts = sorted({int(t) for t in ([T] if isinstance(T, (int, np.integer)) else T)})
    if not ts or ts[0] < 1:
        raise SnncError(f"-T must be positive integers, got {T}")
    return ts
