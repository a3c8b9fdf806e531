"""Golden tests for every pass: small models built here, rewritten graph vs checked-in dump, onnxruntime
equality for exact passes on random inputs (several seeds), idempotence, and the attribute edge cases."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from models import Builder, tiny_yolo

from snnc.compiler.dump import graph_dump
from snnc.ir.errors import SnncError, UnsupportedOpError
from snnc.compiler.graph import run_model
from models import apply_pass, run_pass  # the classic choices unless a test names others
from snnc.compiler.ratelimit import neurons_to_activations

SEEDS = (0, 1, 2)


def max_rel_err(a: dict, b: dict) -> float:
    return max(float(np.abs(a[k] - b[k]).max() / max(np.abs(a[k]).max(), 1e-12)) for k in a)


def assert_exact(before: onnx.ModelProto, after: onnx.ModelProto, shape, tol: float = 1e-5, low: float = -1.0):
    """Outputs equal on random inputs, with onnxruntime's optimizer off and on."""
    for seed in SEEDS:
        x = np.random.default_rng(seed).uniform(low, 1.0, shape).astype(np.float32)
        for optimize in (False, True):
            ref = run_model(before, {"images": x}, optimize=optimize)
            got = run_model(after, {"images": x}, optimize=optimize)
            assert max_rel_err(ref, got) <= tol, (seed, optimize, max_rel_err(ref, got))


def ops(model: onnx.ModelProto) -> list[str]:
    return [n.op_type for n in model.graph.node]


def check_pass(name: str, model: onnx.ModelProto, golden, dump_name: str, rewrites: int, **opts
               ) -> onnx.ModelProto:
    """The pass's dump equals the golden one, it reports `rewrites` rewrites, and a second run rewrites nothing."""
    first = run_pass(model, name, **opts)
    out = first.model
    onnx.checker.check_model(out)
    golden(dump_name, graph_dump(out))
    assert first.rewrites == rewrites, f"{name} reported {first.rewrites} rewrites, expected {rewrites}"
    again = run_pass(out, name, **opts)
    assert graph_dump(again.model) == graph_dump(out), "a second application changed the graph"
    assert again.rewrites == 0, f"a second application of {name} reported {again.rewrites} rewrites"
    return out


# ---------------------------------------------------------------- fold_batchnorm

@pytest.mark.parametrize("eps", [1e-5, 1e-3])
def test_fold_batchnorm_conv(golden, eps):
    b = Builder(1)
    y = b.bn(b.conv("images", 3, 6), 6, eps=eps)
    m = b.model([1, 3, 8, 8], [y])
    out = check_pass("fold_batchnorm", m, golden, f"fold_batchnorm_conv_eps{eps:g}", rewrites=1)
    assert "BatchNormalization" not in ops(out)
    assert_exact(m, out, (1, 3, 8, 8))


def test_fold_batchnorm_epsilon_is_used():
    b = Builder(1)
    y = b.bn(b.conv("images", 3, 4), 4, eps=0.5)
    m = b.model([1, 3, 6, 6], [y])
    out = apply_pass(m, "fold_batchnorm")
    assert_exact(m, out, (1, 3, 6, 6))  # with eps ignored the error would be tens of percent


def test_fold_batchnorm_convtranspose_grouped(golden):
    b = Builder(2)
    w = b.rng.normal(0, 0.5, (4, 3, 2, 2)).astype(np.float32)  # (C_in, C_out/group, kh, kw), group 2 -> 6 out
    y = b.node("ConvTranspose", ["images", b.const(w)], kernel_shape=[2, 2], strides=[2, 2], group=2)
    y = b.bn(y, 6)
    m = b.model([1, 4, 5, 5], [y])
    out = check_pass("fold_batchnorm", m, golden, "fold_batchnorm_deconv_group2", rewrites=1)
    assert ops(out) == ["ConvTranspose"]
    assert_exact(m, out, (1, 4, 5, 5))


def test_fold_batchnorm_lone_bn_becomes_depthwise_conv(golden):
    b = Builder(3)
    x = b.node("Relu", [b.conv("images", 3, 5)])
    y = b.bn(x, 5)
    m = b.model([1, 3, 6, 6], [y])
    out = check_pass("fold_batchnorm", m, golden, "fold_batchnorm_lone", rewrites=1)
    assert ops(out) == ["Conv", "Relu", "Conv"]
    assert_exact(m, out, (1, 3, 6, 6))


def test_fold_batchnorm_shared_conv_output_not_folded():
    b = Builder(4)
    c = b.conv("images", 3, 4)
    m = b.model([1, 3, 6, 6], [b.bn(c, 4), b.node("Relu", [c])])
    out = apply_pass(m, "fold_batchnorm")
    assert ops(out).count("Conv") == 2  # the BN became its own depthwise conv; the shared conv is untouched
    assert_exact(m, out, (1, 3, 6, 6))


# ---------------------------------------------------------------- upsample_to_deconv

def _resize_model(**kw) -> onnx.ModelProto:
    b = Builder(5)
    x = b.node("Relu", [b.conv("images", 3, 4)])
    scales = kw.pop("scales", None)
    sizes = kw.pop("sizes", None)
    ins = [x, "", b.const(np.array(scales, np.float32)) if scales else ""]
    if sizes:
        ins.append(b.const(np.array(sizes, np.int64)))
    y = b.node("Resize", ins, mode="nearest", **kw)
    return b.model([1, 3, 6, 6], [b.conv(y, 4, 2, k=1)])


@pytest.mark.parametrize("case", [
    dict(scales=[1, 1, 2, 2], coordinate_transformation_mode="asymmetric", nearest_mode="floor"),
    dict(scales=[1, 1, 3, 2], coordinate_transformation_mode="asymmetric", nearest_mode="floor"),
    dict(sizes=[1, 4, 12, 12], coordinate_transformation_mode="asymmetric", nearest_mode="floor"),
    dict(scales=[1, 1, 2, 2], coordinate_transformation_mode="half_pixel", nearest_mode="round_prefer_floor"),
], ids=["scales2", "scales3x2", "sizes", "half_pixel"])
def test_upsample_to_deconv(golden, case):
    m = _resize_model(**dict(case))
    tag = "_".join(str(v) for v in case.values()).replace(" ", "").replace("[", "").replace("]", "").replace(",", "x")
    out = check_pass("upsample_to_deconv", m, golden, f"upsample_{tag}", rewrites=1)
    assert "Resize" not in ops(out) and "ConvTranspose" in ops(out)
    assert_exact(m, out, (1, 3, 6, 6))


def test_upsample_refuses_non_block_copy():
    m = _resize_model(scales=[1, 1, 2, 2], coordinate_transformation_mode="half_pixel", nearest_mode="floor")
    with pytest.raises(UnsupportedOpError, match="resize"):
        apply_pass(m, "upsample_to_deconv")


def test_upsample_refuses_linear_and_fractional():
    b = Builder(6)
    y = b.node("Resize", ["images", "", b.const(np.array([1, 1, 2, 2], np.float32))], mode="linear")
    with pytest.raises(UnsupportedOpError, match="nearest"):
        apply_pass(b.model([1, 3, 4, 4], [y]), "upsample_to_deconv")
    b = Builder(6)
    y = b.node("Resize", ["images", "", b.const(np.array([1, 1, 1.5, 1.5], np.float32))], mode="nearest")
    with pytest.raises(UnsupportedOpError, match="not integers"):
        apply_pass(b.model([1, 3, 4, 4], [y]), "upsample_to_deconv")


# ---------------------------------------------------------------- maxpool_to_strided_conv

def _pool_model(act: str = "LeakyRelu", c: int = 4, size: int = 8, consumer: bool = True, **pool) -> onnx.ModelProto:
    b = Builder(7)
    x = b.conv("images", 3, c)
    x = b.node(act, [x], alpha=0.1) if act == "LeakyRelu" else b.node(act, [x])
    y = b.node("MaxPool", [x], **pool)
    if consumer:
        y = b.conv(y, c, 3)
    return b.model([1, 3, size, size], [y])


POOLS = {
    "k2s2": dict(kernel_shape=[2, 2], strides=[2, 2]),
    "k2s1_pad_br": dict(kernel_shape=[2, 2], strides=[1, 1], pads=[0, 0, 1, 1]),
    "k3s1_pad1": dict(kernel_shape=[3, 3], strides=[1, 1], pads=[1, 1, 1, 1]),
    "k3s2_ceil": dict(kernel_shape=[3, 3], strides=[2, 2], ceil_mode=1),
    "k2s2_same_upper": dict(kernel_shape=[2, 2], strides=[2, 2], auto_pad="SAME_UPPER"),
    "k5s1_pad2": dict(kernel_shape=[5, 5], strides=[1, 1], pads=[2, 2, 2, 2]),
}


@pytest.mark.parametrize("name", list(POOLS))
def test_maxpool_exact(golden, name):
    size = 7 if name in ("k3s2_ceil", "k2s2_same_upper") else 8
    m = _pool_model(size=size, **POOLS[name])
    out = check_pass("maxpool_to_strided_conv", m, golden, f"maxpool_{name}", rewrites=1)
    assert "MaxPool" not in ops(out)
    assert_exact(m, out, (1, 3, size, size))


def test_maxpool_nonneg_input_uses_fewer_channels(golden):
    m = _pool_model(act="Relu", **POOLS["k2s2"])
    out = check_pass("maxpool_to_strided_conv", m, golden, "maxpool_k2s2_relu", rewrites=1)
    widths = [init.dims[0] for init in out.graph.initializer if init.name.endswith("_W") and "max0" in init.name]
    assert widths == [4 * 4]  # (a-b, b) per pair, 2 pairs, 4 channels: no negative copies
    assert_exact(m, out, (1, 3, 8, 8))


def test_maxpool_without_conv_consumer_keeps_linear_sum():
    m = _pool_model(consumer=False, **POOLS["k2s2"])
    out = apply_pass(m, "maxpool_to_strided_conv")
    assert ops(out)[-1] == "Conv"
    assert_exact(m, out, (1, 3, 8, 8))


def test_maxpool_keeps_explicit_zero_pad_semantics():
    """PyTorch's ZeroPad2d + MaxPool: zero padding stays zero (onnxruntime's optimizer would make it -inf)."""
    b = Builder(8)
    x = b.node("LeakyRelu", [b.conv("images", 3, 4)], alpha=0.1)
    x = b.node("Pad", [x, b.const(np.array([0, 0, 0, 0, 0, 0, 1, 1], np.int64))], mode="constant")
    y = b.conv(b.node("MaxPool", [x], kernel_shape=[2, 2], strides=[1, 1]), 4, 3)
    m = b.model([1, 3, 6, 6], [y])
    out = apply_pass(m, "maxpool_to_strided_conv")
    x_in = np.random.default_rng(0).uniform(-1, 1, (1, 3, 6, 6)).astype(np.float32)
    ref = run_model(m, {"images": x_in})  # optimizations off: the graph as written
    got = run_model(out, {"images": x_in})
    assert max_rel_err(ref, got) <= 1e-5


def test_maxpool_approximate_is_window_mean():
    m = _pool_model(consumer=False, **POOLS["k2s2"])
    out = apply_pass(m, "maxpool_to_strided_conv", maxpool="approximate")
    assert ops(out) == ["Conv", "LeakyRelu", "Conv"]
    b = Builder(7)
    x = b.node("LeakyRelu", [b.conv("images", 3, 4)], alpha=0.1)
    mean = b.model([1, 3, 8, 8], [b.node("AveragePool", [x], kernel_shape=[2, 2], strides=[2, 2])])
    xin = np.random.default_rng(1).uniform(-1, 1, (1, 3, 8, 8)).astype(np.float32)
    got, avg, mx = (list(run_model(g, {"images": xin}).values())[0] for g in (out, mean, m))
    assert np.allclose(got, avg, atol=1e-6)
    assert np.all(got <= mx + 1e-6)  # the stated bound: mean <= max, |mean - max| <= max - min


def test_maxpool_refuses_dilation():
    m = _pool_model(kernel_shape=[2, 2], strides=[2, 2], dilations=[2, 2], size=9)
    with pytest.raises(UnsupportedOpError, match="dilated"):
        apply_pass(m, "maxpool_to_strided_conv")


# ---------------------------------------------------------------- split_leaky_relu

def _convertible(ann: onnx.ModelProto) -> onnx.ModelProto:
    m = ann
    for p in ("fold_batchnorm", "upsample_to_deconv", "maxpool_to_strided_conv"):
        m = apply_pass(m, p)
    return m


@pytest.mark.parametrize("size", [32, 48])
def test_split_leaky_relu_tiny_yolo(golden, size):
    m = _convertible(tiny_yolo(host=False, size=size))
    out = check_pass("split_leaky_relu", m, golden, f"split_leaky_relu_tiny_yolo_{size}",
                     rewrites=ops(m).count("LeakyRelu"))
    assert "LeakyRelu" not in ops(out)
    assert ops(out).count("Relu") == ops(m).count("Relu") + ops(m).count("LeakyRelu")
    # through max-pool trees (grouped convs), the edge Pad, the upsampling deconvolution and the Concat
    assert {"Pad", "ConvTranspose", "Concat"} <= set(ops(out))
    assert_exact(m, out, (1, 3, size, size))


def test_split_leaky_relu_doubles_channels_and_keeps_alpha():
    b = Builder(21)
    y = b.node("LeakyRelu", [b.conv("images", 3, 4)], alpha=0.25)
    m = b.model([1, 3, 6, 6], [b.conv(y, 4, 2, k=1)])
    out = apply_pass(m, "split_leaky_relu")
    w_first = [i for i in out.graph.initializer if i.dims[:1] == [8]]
    assert w_first, "the producing conv has 2 x 4 output channels"
    assert_exact(m, out, (1, 3, 6, 6))
    # the rate-limit view: relu(z) - 0.25 relu(-z) reproduces leaky(z) with alpha 0.25 (not the default 0.01)
    x = np.random.default_rng(0).uniform(-1, 1, (1, 3, 6, 6)).astype(np.float32)
    assert max_rel_err(run_model(m, {"images": x}), run_model(out, {"images": x})) < 1e-5


def test_split_leaky_relu_keeps_what_it_cannot_split():
    b = Builder(22)
    y = b.node("LeakyRelu", [b.conv("images", 3, 4)], alpha=0.1)
    m = b.model([1, 3, 6, 6], [y])  # a graph output: nothing downstream to fold the recombination into
    out = apply_pass(m, "split_leaky_relu")
    assert ops(out) == ops(m)
    b = Builder(23)
    z = b.conv("images", 3, 4)
    y = b.node("LeakyRelu", [z], alpha=0.1)
    m = b.model([1, 3, 6, 6], [b.conv(y, 4, 2, k=1), b.node("Relu", [z])])  # the conv output is read twice
    assert "LeakyRelu" in ops(apply_pass(m, "split_leaky_relu"))


# ---------------------------------------------------------------- activations_to_neurons

def test_activations_to_neurons(golden):
    m = apply_pass(apply_pass(apply_pass(tiny_yolo(host=False), "fold_batchnorm"), "upsample_to_deconv"),
                   "maxpool_to_strided_conv")
    out = check_pass("activations_to_neurons", m, golden, "activations_tiny_yolo",
                     rewrites=ops(m).count("Relu") + ops(m).count("LeakyRelu"))
    domains = {(n.domain, n.op_type) for n in out.graph.node if n.domain}
    assert domains == {("snnc", "IF"), ("snnc", "SignedIF")}
    # thresholds not calibrated yet are 1: the rate-limit ANN clips there, and equals the ANN for inputs below 1
    leaky = [n for n in out.graph.node if n.op_type == "SignedIF"]
    assert all(onnx.helper.get_attribute_value(a) == pytest.approx(0.1) for n in leaky for a in n.attribute
               if a.name == "alpha")


def test_clip_becomes_if_with_its_threshold_and_is_exact_in_rate_limit():
    b = Builder(9)
    y = b.node("Clip", [b.conv("images", 3, 4), b.const(np.float32(0)), b.const(np.float32(0.7))])
    m = b.model([1, 3, 6, 6], [b.conv(y, 4, 2, k=1)])
    out = apply_pass(m, "activations_to_neurons")
    (n,) = [n for n in out.graph.node if n.domain == "snnc"]
    assert n.op_type == "IF"
    assert_exact(m, neurons_to_activations(out), (1, 3, 6, 6))


def test_qcfs_chain_becomes_if():
    b = Builder(10)
    lam, levels = 2.0, 8
    z = b.conv("images", 3, 4)
    y = b.node("Mul", [z, b.const(np.float32(levels / lam))])
    y = b.node("Add", [y, b.const(np.float32(0.5))])
    y = b.node("Floor", [y])
    y = b.node("Div", [y, b.const(np.float32(levels))])
    y = b.node("Clip", [y, b.const(np.float32(0)), b.const(np.float32(1))])
    y = b.node("Mul", [y, b.const(np.float32(lam))])
    m = b.model([1, 3, 6, 6], [b.conv(y, 4, 2, k=1)])
    out = apply_pass(m, "activations_to_neurons")
    neurons = [n for n in out.graph.node if n.domain == "snnc"]
    assert [n.op_type for n in neurons] == ["IF"]
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in neurons[0].attribute}
    assert attrs["threshold"] == [pytest.approx(lam)] and attrs["v_init"] == 0.5 and attrs["qcfs_levels"] == levels
    assert "Floor" not in ops(out)


@pytest.mark.parametrize("act", ["Sigmoid", "Tanh", "HardSwish", "Mish"])
def test_other_activations_refused_with_node_name(act):
    b = Builder(11)
    y = b.node(act, [b.conv("images", 3, 4)])
    m = b.model([1, 3, 6, 6], [b.conv(y, 4, 2, k=1)])
    with pytest.raises(UnsupportedOpError, match=rf"{act} node '{act.lower()}_\d+'.*ReLU"):
        apply_pass(m, "activations_to_neurons")


def test_silu_named_as_such():
    b = Builder(12)
    z = b.conv("images", 3, 4)
    y = b.node("Mul", [z, b.node("Sigmoid", [z])])
    m = b.model([1, 3, 6, 6], [b.conv(y, 4, 2, k=1)])
    with pytest.raises(UnsupportedOpError, match="SiLU"):
        apply_pass(m, "activations_to_neurons")


# ---------------------------------------------------------------- channel_norm

def _spiking_tiny(leaky: bool = True) -> tuple[onnx.ModelProto, onnx.ModelProto]:
    ann = tiny_yolo(host=False, leaky=leaky)
    m = ann
    for p in ("fold_batchnorm", "upsample_to_deconv", "maxpool_to_strided_conv", "activations_to_neurons"):
        m = apply_pass(m, p)
    return ann, m


def _calib(n: int = 6, seed: int = 3) -> np.ndarray:
    return np.random.default_rng(seed).random((n, 3, 32, 32), dtype=np.float32)


@pytest.mark.parametrize("leaky", [True, False], ids=["leaky", "relu"])
def test_channel_norm_percentile_100_is_exact_on_calibration_data(golden, leaky):
    ann, m = _spiking_tiny(leaky)
    calib = _calib()
    out = check_pass("channel_norm", m, golden, f"channel_norm_p100_{'leaky' if leaky else 'relu'}",
                     rewrites=sum(n.domain == "snnc" for n in m.graph.node), calibration=calib, percentile=100.0, progress=False)
    rl = neurons_to_activations(out, clip=True)
    ref, got = run_model(ann, {"images": calib}), run_model(rl, {"images": calib})
    assert max_rel_err(ref, got) <= 1e-5
    thresholds = [a for n in out.graph.node if n.domain == "snnc" for a in n.attribute if a.name == "threshold"]
    assert all(onnx.helper.get_attribute_value(a) == [1.0] for a in thresholds)


def test_channel_norm_lower_percentile_clips_and_reports():
    ann, m = _spiking_tiny()
    calib = _calib()
    ctx_out = apply_pass(m, "channel_norm", calibration=calib, percentile=99.0, progress=False)
    rl = neurons_to_activations(ctx_out, clip=True)
    err = max_rel_err(run_model(ann, {"images": calib}), run_model(rl, {"images": calib}))
    assert 1e-4 < err < 1.0  # a real, bounded clipping error


def test_layer_norm_one_lambda_per_layer():
    _, m = _spiking_tiny()
    out = apply_pass(m, "channel_norm", calibration=_calib(), percentile=100.0, norm="layer", progress=False)
    for n in out.graph.node:
        if n.domain == "snnc":
            lam = [onnx.helper.get_attribute_value(a) for a in n.attribute if a.name == "lambda"][0]
            assert len(set(lam)) == 1


def test_channel_norm_without_calibration_is_an_error():
    _, m = _spiking_tiny()
    with pytest.raises(SnncError, match="--calib"):
        apply_pass(m, "channel_norm")
