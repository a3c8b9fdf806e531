"""Graded signed memory neurons (`--leaky graded`, docs/neurons.md): which layers have them, and the one-line
refusal of a backend that does not run them yet."""

from __future__ import annotations

from snnc.ir.errors import SnncError
from snnc.ir.network import Network


def graded_layers(net: Network) -> list[str]:
    """Names of the layers whose neurons send graded spikes."""
    return [layer.name for layer in net.neuron_layers if layer.neuron.graded]


def refuse_graded(net: Network, backend: str) -> None:
    """SnncError naming the first graded layer: `backend` does not run graded neurons yet."""
    names = graded_layers(net)
    if names:
        raise SnncError(f"the {backend} backend does not run graded signed neurons yet (layer '{names[0]}', "
                        f"--leaky graded): use the numpy or torch backend, or compile with --leaky signed or split")
