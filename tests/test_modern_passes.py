"""Golden and exactness tests for the passes YOLOv5/v8-style networks need: residual_add (Add of spiking branches)
and channel_slice (Split / Slice of channels); plus the SPPF block and a C2f block through the whole pipeline
and the split of a DFL head (its Softmax and expectation conv stay on the host)."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from models import Builder
from test_passes import assert_exact, check_pass, ops

from snnc.compiler.graph import run_model
from models import apply_pass  # the classic choices unless a test names others
from snnc.compiler.ratelimit import neurons_to_activations
from snnc.compiler.split import split_model

SHAPE = (1, 3, 8, 8)


def _bottleneck(seed: int, relu_after: bool = False) -> onnx.ModelProto:
    """x = relu(conv(img)); y = x + relu(conv(relu(conv(x)))) -> conv (YOLOv5 Bottleneck)."""
    b = Builder(seed)
    x = b.node("Relu", [b.conv("images", 3, 4)])
    r = b.node("Relu", [b.conv(b.node("Relu", [b.conv(x, 4, 4, k=1)]), 4, 4)])
    y = b.node("Add", [x, r])
    if relu_after:
        y = b.node("Relu", [y])
    return b.model(list(SHAPE), [b.conv(y, 4, 6, k=1)])


def test_residual_add_folds_into_the_next_conv(golden):
    m = _bottleneck(10)
    out = check_pass("residual_add", m, golden, "residual_add_bottleneck", rewrites=ops(m).count("Add"))
    assert "Add" not in ops(out) and ops(out).count("Concat") == 1
    assert ops(out).count("Conv") == 4  # the [I I] conv is folded into the consumer
    assert_exact(m, out, SHAPE)


def test_residual_add_with_two_consumers_keeps_a_linear_conv(golden):
    b = Builder(11)
    x = b.node("Relu", [b.conv("images", 3, 4)])
    y = b.node("Add", [x, b.node("Relu", [b.conv(x, 4, 4)])])
    m = b.model(list(SHAPE), [b.conv(y, 4, 2, k=1), b.conv(y, 4, 3)])
    out = check_pass("residual_add", m, golden, "residual_add_shared", rewrites=ops(m).count("Add"))
    assert "Add" not in ops(out) and ops(out).count("Conv") == 5
    assert_exact(m, out, SHAPE)


@pytest.mark.parametrize("seed", [12, 13, 14])
def test_residual_add_then_relu_becomes_a_neuron_on_a_conv(seed):
    m = _bottleneck(seed, relu_after=True)
    out = apply_pass(apply_pass(m, "residual_add"), "activations_to_neurons")
    assert_exact(m, neurons_to_activations(out, clip=False), SHAPE)


def test_residual_add_leaves_a_bias_add_alone():
    b = Builder(15)
    x = b.conv("images", 3, 4)
    y = b.node("Add", [x, b.const(np.ones((1, 4, 1, 1), np.float32))])
    m = b.model(list(SHAPE), [y])
    assert apply_pass(m, "residual_add").graph.node[-1].op_type == "Add"


def _c2f(seed: int, op: str) -> onnx.ModelProto:
    b = Builder(seed)
    return b.model(list(SHAPE), [b.conv(_c2f_block(b, op), 6, 5, k=1)])


def _c2f_block(b: Builder, op: str) -> str:
    """YOLOv8 C2f: cv1 -> split in two halves -> bottleneck on the second -> concat of three -> cv2 (6 channels)."""
    x = b.node("Relu", [b.conv("images", 3, 8, k=1)])
    if op == "Split":
        b.nodes.append(onnx.helper.make_node("Split", [x, b.const(np.array([4, 4], np.int64))], ["y0", "y1"],
                                             name="split", axis=1))
        y0, y1 = "y0", "y1"
    else:
        def sl(lo, hi):
            return b.node("Slice", [x, b.const(np.array([lo], np.int64)), b.const(np.array([hi], np.int64)),
                                    b.const(np.array([1], np.int64))])
        y0, y1 = sl(0, 4), sl(4, 8)
    m1 = b.node("Add", [y1, b.node("Relu", [b.conv(b.node("Relu", [b.conv(y1, 4, 4)]), 4, 4)])])
    cat = b.node("Concat", [y0, y1, m1], axis=1)
    return b.node("Relu", [b.conv(cat, 12, 6, k=1)])


@pytest.mark.parametrize("op", ["Split", "Slice"])
def test_channel_slice(golden, op):
    m = _c2f(20, op)
    out = check_pass("channel_slice", m, golden, f"channel_slice_c2f_{op.lower()}",
                     rewrites=ops(m).count(op))
    assert op not in ops(out)
    assert_exact(m, out, SHAPE)


def test_channel_slice_step_and_unused_part():
    b = Builder(21)
    x = b.node("Relu", [b.conv("images", 3, 6)])
    y = b.node("Slice", [x, b.const(np.array([1], np.int64)), b.const(np.array([6], np.int64)),
                         b.const(np.array([1], np.int64)), b.const(np.array([2], np.int64))])
    m = b.model(list(SHAPE), [b.conv(y, 3, 2)])
    out = apply_pass(m, "channel_slice")
    assert "Slice" not in ops(out) and ops(out).count("Conv") == 2  # folded: channels 1, 3, 5
    assert_exact(m, out, SHAPE)


def test_channel_slice_leaves_spatial_slices_alone():
    b = Builder(22)
    x = b.conv("images", 3, 4)
    y = b.node("Slice", [x, b.const(np.array([0], np.int64)), b.const(np.array([4], np.int64)),
                         b.const(np.array([2], np.int64))])
    m = b.model(list(SHAPE), [y])
    assert "Slice" in ops(apply_pass(m, "channel_slice"))


@pytest.mark.parametrize("op", ["Split", "Slice"])
def test_c2f_and_sppf_through_the_pipeline_in_the_rate_limit(op):
    """A C2f block, then SPPF (three chained 5x5 stride-1 max-pools, concat of four): every pass up to the neurons,
    then the neurons replaced by their activations equals the ANN (exact passes only)."""
    b = Builder(23)
    x = b.node("Relu", [b.conv(_c2f_block(b, op), 6, 4, k=1)])
    p1 = b.node("MaxPool", [x], kernel_shape=[5, 5], strides=[1, 1], pads=[2, 2, 2, 2])
    p2 = b.node("MaxPool", [p1], kernel_shape=[5, 5], strides=[1, 1], pads=[2, 2, 2, 2])
    p3 = b.node("MaxPool", [p2], kernel_shape=[5, 5], strides=[1, 1], pads=[2, 2, 2, 2])
    y = b.conv(b.node("Relu", [b.conv(b.node("Concat", [x, p1, p2, p3], axis=1), 16, 8, k=1)]), 8, 5, k=1)
    m = b.model(list(SHAPE), [y])
    out = m
    for name in ("channel_slice", "residual_add", "maxpool_to_strided_conv", "activations_to_neurons"):
        out = apply_pass(out, name)
    assert not {"Add", "Split", "Slice", "MaxPool"} & set(ops(out))
    assert_exact(m, neurons_to_activations(out, clip=False), SHAPE, tol=1e-4)


def test_dfl_head_stays_on_the_host():
    """Anchor-free head: conv -> Reshape -> Transpose -> Softmax -> 1x1 Conv (the DFL expectation): the split ends
    at the head conv; the Softmax and the expectation conv are host work."""
    b = Builder(24)
    h = b.conv(b.node("Relu", [b.conv("images", 3, 4)]), 4, 16, k=1)  # 4 sides x 4 bins
    r = b.node("Reshape", [h, b.const(np.array([1, 4, 4, 64], np.int64))])
    s = b.node("Softmax", [b.node("Transpose", [r], perm=[0, 2, 1, 3])], axis=1)
    d = b.node("Conv", [s, b.const(np.arange(4, dtype=np.float32).reshape(1, 4, 1, 1))], kernel_shape=[1, 1])
    m = b.model(list(SHAPE), [d])
    parts = split_model(m)
    assert [n.op_type for n in parts.spiking.graph.node] == ["Conv", "Relu", "Conv"]
    assert [n.op_type for n in parts.host.graph.node] == ["Reshape", "Transpose", "Softmax", "Conv"]
    x = np.random.default_rng(0).random(SHAPE, dtype=np.float32)
    heads = run_model(parts.spiking, {"images": x})
    assert np.allclose(run_model(parts.host, heads)[d], run_model(m, {"images": x})[d], atol=1e-6)
