"""--norm auto: a per-layer choice of channel/layer normalization and percentile from held-out calibration images,
a warning for small sets, the choice in `snnc inspect`."""

from __future__ import annotations

import logging

import numpy as np
import onnx
import pytest
from models import tiny_yolo

from snnc.compiler.api import compile_model
from snnc.compiler.graph import run_model
from snnc.compiler.inspect import format_table
from models import run_pass  # the classic choices unless a test names others
from snnc.ir.errors import SnncError
from snnc.ir.options import CompileOptions


def _neurons(leaky: bool = False) -> onnx.ModelProto:
    from models import apply_pass  # the classic choices unless a test names others

    m = tiny_yolo(host=False, leaky=leaky)
    for p in ("fold_batchnorm", "upsample_to_deconv", "maxpool_to_strided_conv", "split_leaky_relu",
              "activations_to_neurons"):
        m = apply_pass(m, p)
    return m


def test_auto_chooses_per_layer_from_held_out_images():
    calib = np.random.default_rng(3).random((9, 3, 32, 32), dtype=np.float32)
    out = run_pass(_neurons(), "channel_norm", calibration=calib, norm="auto", progress=False)
    layers = out.stats["channel_norm"]["layers"]
    assert layers and all(v["norm"] in ("channel", "layer") for v in layers.values())
    for v in layers.values():
        best = min(v["scores"], key=v["scores"].get)
        assert best == f"{v['norm']}@{v['percentile']:g}"  # the recorded choice is the best held-out score
    assert out.stats["channel_norm"]["norm"] == "auto"


def test_auto_rate_limit_is_no_worse_than_the_worst_fixed_choice():
    """The held-out criterion trades clipping for quantization; in the rate limit it must not lose to both."""
    rng = np.random.default_rng(4)
    calib, test = rng.random((6, 3, 32, 32), dtype=np.float32), rng.random((6, 3, 32, 32), dtype=np.float32)
    ann = tiny_yolo(host=False, leaky=False)
    ref = run_model(ann, {"images": test})
    errs = {}
    for norm in ("channel", "layer", "auto"):
        from snnc.compiler.ratelimit import neurons_to_activations

        out = run_pass(_neurons(), "channel_norm", calibration=calib, norm=norm, progress=False).model
        got = run_model(neurons_to_activations(out, clip=True), {"images": test})
        errs[norm] = max(float(np.abs(got[k] - ref[k]).max() / np.abs(ref[k]).max()) for k in ref)
    assert errs["auto"] <= max(errs["channel"], errs["layer"]) + 1e-6, errs


def test_auto_warns_on_a_small_set_and_inspect_shows_the_choice(tmp_path, caplog):
    path = tmp_path / "tiny.onnx"
    onnx.save(tiny_yolo(host=False, leaky=True), path)
    with caplog.at_level(logging.WARNING):
        res = compile_model(path, calib_random=4, progress=False, norm="auto")
    assert any("only 4 calibration images" in r.getMessage() for r in caplog.records)
    table = format_table(res.network)
    assert "norm auto chose:" in table


def test_unknown_norm_is_refused():
    with pytest.raises(SnncError, match="--norm"):
        CompileOptions(norm="best").validate()
