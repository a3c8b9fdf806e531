"""snnc's NIR export read by snnTorch: spike counts per layer against snnc's NumPy simulator, in one run.

    python bench/nir_consumer.py                 # digits_relu.onnx, 2 test images, T = 16,64
    python bench/nir_consumer.py -T 16,64,256 --images 4

The trained digits detector is compiled with plain IF neurons and V(0) = 0 (what NIR's IF expresses; docs/nir.md),
calibrated on 8 training images; its 8x8 head and the 11 spiking layers before it are exported
(`--outputs /head8/Conv`: the 16x16 head needs the upsampling and concat NIR has no primitive for). snnTorch
1.0.0 loads the file with its own importer and runs it twice: with the settings that make its Leaky neuron
snnc's IF ("matched": beta 1, reset_delay True) and as its importer builds it ("as imported": beta 0.9, reset_delay
False). Printed per T: layers with equal spike counts, snnTorch's spikes / snnc's, and the head's
max |difference| / max |head| (snnc decodes the head as the mean over steps; so does this script for snnTorch).
Needs the test extra (snntorch, nirtorch, nir).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from nir_consumer import by_layer, compile_digits, run_snntorch, snntorch_model  # noqa: E402

HEAD = "/head8/Conv"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-T", default="16,64", help="comma-separated step counts (one run each)")
    ap.add_argument("--images", type=int, default=2, help="digits test images")
    args = ap.parse_args()

    import nir
    import torch

    from snnc.backends import get_backend
    from snnc.backends.nir import write_nir
    from snnc.evaluation.digits import make_digits

    torch.set_num_threads(1)
    tmp = Path(tempfile.mkdtemp())
    net = compile_digits(tmp, neuron="plain", v_init=0.0, maxpool="exact")  # what NIR can express
    write_nir(net, tmp / "digits.nir", [HEAD])
    graph = nir.read(tmp / "digits.nir")
    x = make_digits("test", args.images, seed=0).images.transpose(0, 3, 1, 2).astype(np.float32) / 255.0
    print(f"digits_relu.onnx, plain IF, V(0) = 0, {args.images} test images; snnTorch 1.0.0 through its NIR importer")
    for T in (int(t) for t in args.T.split(",")):
        ref = get_backend("numpy").simulate(net, x, T, threads=1)
        head = ref.outputs[T][HEAD]
        for label, kw in (("matched", {}), ("as imported", {"as_imported": True})):
            model, leaky = snntorch_model(graph, **kw)
            counts, out = run_snntorch(model, leaky, np.broadcast_to(x, (T, *x.shape)))
            counts = by_layer(graph, counts)
            ours = sum(int(ref.spike_counts[k].sum()) for k in counts)
            theirs = sum(int(c.sum()) for c in counts.values())
            equal = sum(np.array_equal(c, ref.spike_counts[k]) for k, c in counts.items())
            print(f"T={T:<4} {label:<12} layers equal {equal}/{len(counts)}  spikes snnTorch/snnc {theirs}/{ours} "
                  f"= {theirs / ours:.4f}  head max|diff|/max|head| {np.abs(out - head).max() / np.abs(head).max():.2e}")


if __name__ == "__main__":
    main()
