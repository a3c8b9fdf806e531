"""fold_linear: the linear 1x1 layers YOLOv5/v8 blocks leave between spiking ones are composed into their consumer
convolutions (through Concat and Pad), exactly; then fixed point runs those networks, every backend bit for bit
equal to the NumPy reference, on small C2f/SPPF graphs and on the trained digits v5/v8 detectors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from models import Builder
from test_modern_passes import _c2f_block
from test_passes import assert_exact, check_pass, ops

import snnc.backends.c as c_backend
from snnc.backends import get_backend
from snnc.compiler.api import compile_model
from models import apply_pass  # the classic choices unless a test names others
from snnc.compiler.ratelimit import neurons_to_activations
from snnc.evaluation.digits import make_digits
from snnc.ir.errors import SnncError
from snnc.ir.fixedpoint import is_copy_layer, quantize

SHAPE = (1, 3, 8, 8)
MODELS = Path(__file__).resolve().parent.parent / "examples" / "digits" / "models"


def _shared_add() -> onnx.ModelProto:
    """An Add read by two convolutions: residual_add leaves its [I I] sum as a linear conv."""
    b = Builder(11)
    x = b.node("Relu", [b.conv("images", 3, 4)])
    y = b.node("Add", [x, b.node("Relu", [b.conv(x, 4, 4)])])
    return b.model(list(SHAPE), [b.conv(y, 4, 2, k=1), b.conv(y, 4, 3)])


def _c2f_sppf(seed: int) -> onnx.ModelProto:
    """C2f (split, bottleneck add, concat of three), then SPPF (three chained 5x5 pools, concat of four)."""
    b = Builder(seed)
    x = b.node("Relu", [b.conv(_c2f_block(b, "Split"), 6, 4, k=1)])
    p1 = b.node("MaxPool", [x], kernel_shape=[5, 5], strides=[1, 1], pads=[2, 2, 2, 2])
    p2 = b.node("MaxPool", [p1], kernel_shape=[5, 5], strides=[1, 1], pads=[2, 2, 2, 2])
    p3 = b.node("MaxPool", [p2], kernel_shape=[5, 5], strides=[1, 1], pads=[2, 2, 2, 2])
    y = b.conv(b.node("Relu", [b.conv(b.node("Concat", [x, p1, p2, p3], axis=1), 16, 8, k=1)]), 8, 5, k=1)
    return b.model(list(SHAPE), [y])


def _linear_inner(net) -> list[str]:
    """Neuron-free connection layers that are neither outputs nor pure copies: what fixed point refused."""
    units = {layer.name: layer.shape[0] for layer in net.layers}
    return [layer.name for layer in net.layers if layer.op in ("conv", "deconv", "dense") and layer.neuron is None
            and layer.name not in net.outputs and not is_copy_layer(layer, units[layer.inputs[0]])]


def test_fold_linear_into_two_consumers(golden):
    m = apply_pass(_shared_add(), "residual_add")
    assert ops(m).count("Conv") == 5  # the [I I] sum is still there: two consumers
    out = check_pass("fold_linear", m, golden, "fold_linear_shared", rewrites=1)
    assert ops(out).count("Conv") == 4 and ops(out).count("Concat") == 1
    assert_exact(_shared_add(), out, SHAPE)


@pytest.mark.parametrize("seed", [30, 31])
def test_fold_linear_through_concat_and_pad(golden, seed):
    """C2f's selections and sum feed Concats, SPPF's maxima feed the next pool's edge Pad and the Concat: all
    pushed into the convolutions after them."""
    m = _c2f_sppf(seed)
    for name in ("channel_slice", "residual_add", "maxpool_to_strided_conv"):
        m = apply_pass(m, name)
    before = ops(m).count("Conv")
    out = check_pass("fold_linear", m, golden, f"fold_linear_c2f_sppf_{seed}", rewrites=6)
    assert ops(out).count("Conv") == before - 6
    assert_exact(_c2f_sppf(seed), out, SHAPE, tol=1e-4)
    spiking = apply_pass(out, "activations_to_neurons")
    assert_exact(_c2f_sppf(seed), neurons_to_activations(spiking, clip=False), SHAPE, tol=1e-4)


def test_fold_linear_leaves_a_linear_output_alone():
    b = Builder(32)
    x = b.node("Relu", [b.conv("images", 3, 4)])
    m = apply_pass(b.model(list(SHAPE), [b.node("Add", [x, b.node("Relu", [b.conv(x, 4, 4)])])]), "residual_add")
    out = apply_pass(m, "fold_linear")
    assert ops(out) == ops(m)  # the sum is the graph output: nothing to fold into


@pytest.fixture(scope="module")
def cbk(tmp_path_factory):
    # -O0: gcc's time dominates on these networks (13 s at -O1, 6 s at -O0 for v8); 4 steps run fast either way
    return c_backend.CBackend(cache_dir=tmp_path_factory.mktemp("c-cache"), cflags="-O0")


def _all_backends_equal(net, x, ts, cbk) -> None:
    ref = get_backend("numpy").simulate(net, x, ts, mode="fixed")
    for name, backend in (("c", cbk), ("torch", get_backend("torch"))):
        res = backend.simulate(net, x, ts, mode="fixed")
        for t in ts:
            for k, v in ref.outputs[t].items():
                assert np.array_equal(res.outputs[t][k], v), (name, t, k)
        for k, v in ref.spike_counts.items():
            assert np.array_equal(res.spike_counts[k], v), (name, k)


def test_c2f_sppf_network_in_fixed_point(tmp_path):
    """Compiled, the C2f + SPPF graph keeps no linear layer between spiking ones, so fixed point accepts it (it
    refused the unfolded one: "linear layers only as outputs"); its fixed-point heads follow the float ones."""
    path = tmp_path / "c2f.onnx"
    onnx.save(_c2f_sppf(33), str(path))
    net = compile_model(path, calib_random=2, progress=False).network
    assert not _linear_inner(net)
    quantize(net)
    unfolded = compile_model(path, calib_random=2, progress=False, skip=("fold_linear",)).network
    assert _linear_inner(unfolded)
    with pytest.raises(SnncError, match="linear layer without neurons"):
        quantize(unfolded)
    x = np.random.default_rng(0).random((2,) + SHAPE[1:], dtype=np.float32)
    fixed = get_backend("numpy").simulate(net, x, [64], mode="fixed").outputs[64]
    flt = get_backend("numpy").simulate(net, x, [64], mode="float").outputs[64]
    for k, v in flt.items():
        assert np.abs(fixed[k] - v).max() <= 0.05 * np.abs(v).max(), k


@pytest.mark.parametrize("arch", ["v5", "v8"])
def test_digits_modern_in_fixed_point(arch, cbk, tmp_path):
    """The trained YOLOv5/v8-style digits detectors: no linear layer left between spiking ones, and C and torch
    equal to NumPy bit for bit in fixed point."""
    from PIL import Image

    data = make_digits("train", 3)
    for i, img in enumerate(data.images):
        Image.fromarray(img).save(tmp_path / f"c{i}.png")
    net = compile_model(MODELS / f"digits_{arch}.onnx", calib_dir=tmp_path, progress=False).network
    assert not _linear_inner(net)
    x = data.images[:1].astype(np.float32).transpose(0, 3, 1, 2) / 255.0
    _all_backends_equal(net, x, [2, 4], cbk)
