"""snnTorch as the consumer of snnc's NIR graphs: load a graph through snnTorch's own importer and step it.
Shared by tests/test_nir.py and bench/nir_consumer.py (docs/nir.md says what snnTorch 1.0.0 does differently)."""

from __future__ import annotations

import contextlib
import io
import warnings
from pathlib import Path

import numpy as np
import snntorch as snn
import torch

from snnc.ir.network import Network

DIGITS = Path(__file__).resolve().parents[1] / "examples" / "digits" / "models" / "digits_relu.onnx"


def snntorch_model(graph, *, as_imported: bool = False):
    """snnTorch's own NIR importer (snntorch.import_nir.import_from_nir), and its Leaky neurons by node name.

    snnTorch 1.0.0 builds each NIR IF as Leaky(beta=0.9, init_hidden=False, reset_delay=False). init_hidden is
    always set to True here: with False the neuron returns (spikes, membrane) and the next layer cannot take it
    (its node_map asks for init_hidden=True). Unless `as_imported`, two more settings make the Leaky NIR's and
    snnc's IF: beta = 1 (no leak; snnTorch's fix of its importer, upstream pull request 452, is not released)
    and reset_delay = True (snnTorch's default: subtract the threshold at the step after the spike, from the
    membrane that spiked, which is snnc's reset by subtraction; reset_delay=False resets from the last step's
    membrane and differs once V >= 2 theta, see test_snntorch_differences_single_neuron)."""
    from snntorch.import_nir import import_from_nir

    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):  # it prints its progress
        warnings.simplefilter("ignore")
        model = import_from_nir(graph)
    leaky = {name: m for name, m in model.named_modules() if isinstance(m, snn.Leaky)}
    for m in leaky.values():
        m.init_hidden = True
        if not as_imported:
            m.beta = torch.tensor(1.0)
            m.reset_delay = True
    return model, leaky


def run_snntorch(model, leaky, x_steps: np.ndarray):
    """Step the model through x_steps (T, B, ...); per-Leaky spike counts (B,) and the mean output."""
    counts = {n: 0 for n in leaky}
    hooks = [m.register_forward_hook(lambda m, i, o, n=n: counts.__setitem__(
        n, counts[n] + o.reshape(o.shape[0], -1).sum(1).numpy())) for n, m in leaky.items()]
    for m in leaky.values():
        m.reset_mem()
    out = 0
    try:
        with torch.no_grad():
            for xt in x_steps:
                y = model(torch.from_numpy(np.array(xt)))
                out = out + (y[0] if isinstance(y, tuple) else y)
    finally:
        for h in hooks:
            h.remove()
    return counts, out.numpy() / len(x_steps)


def by_layer(graph, counts):
    return {str(graph.nodes[k].metadata["snnc_name"]): v for k, v in counts.items()}


def compile_digits(tmp_path: Path, **options) -> Network:
    """digits_relu.onnx compiled with `options`, calibrated on 8 training images of the digits set."""
    from PIL import Image

    from snnc.compiler.api import compile_model
    from snnc.evaluation.digits import make_digits

    calib = tmp_path / "calib"
    calib.mkdir()
    for i, img in enumerate(make_digits("train", 8, seed=0).images):
        Image.fromarray(img).save(calib / f"{i}.png")
    return compile_model(DIGITS, calib_dir=calib, progress=False, include_ann=False, **options).network
