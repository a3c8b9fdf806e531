"""calibrate_to_T (--target-T): golden dump, idempotence, and that it lowers the SNN's error at T against the
rate-limit ANN on inputs it was not calibrated on; option validation through the CLI."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from models import tiny_yolo

from snnc.apps.cli import main
from snnc.backends import get_backend
from snnc.compiler.api import compile_model
from snnc.compiler.dump import graph_dump
from snnc.compiler.graph import run_model
from models import apply_pass  # the classic choices unless a test names others
from snnc.compiler.pipeline import select_passes
from snnc.ir.errors import SnncError
from snnc.ir.options import CompileOptions


def _normalized(leaky: bool) -> onnx.ModelProto:
    m = tiny_yolo(host=False, leaky=leaky)
    for p in ("fold_batchnorm", "upsample_to_deconv", "maxpool_to_strided_conv", "split_leaky_relu",
              "activations_to_neurons"):
        m = apply_pass(m, p)
    calib = np.random.default_rng(3).random((6, 3, 32, 32), dtype=np.float32)
    return apply_pass(m, "channel_norm", calibration=calib, progress=False), calib


@pytest.mark.parametrize("leaky", [True, False], ids=["leaky", "relu"])
def test_calibrate_to_T_golden_and_idempotent(golden, leaky):
    m, calib = _normalized(leaky)
    out = apply_pass(m, "calibrate_to_T", calibration=calib, target_T=4, progress=False)
    onnx.checker.check_model(out)
    golden(f"calibrate_to_T_T4_{'leaky' if leaky else 'relu'}", graph_dump(out))
    again = apply_pass(out, "calibrate_to_T", calibration=calib, target_T=4, progress=False)
    assert graph_dump(again) == graph_dump(out)
    assert graph_dump(out) != graph_dump(m)  # it did change something


def test_calibrate_to_T_runs_only_with_the_option():
    assert "calibrate_to_T" not in select_passes(CompileOptions())
    assert select_passes(CompileOptions(target_T=8))[-1] == "calibrate_to_T"


def _head_error(net, reference: dict, x: np.ndarray, T: int) -> float:
    sim = get_backend("numpy").simulate(net, x, [T], progress=False)
    errs = [np.abs(sim.outputs[T][layer] - reference[name]).mean() / np.abs(reference[name]).mean()
            for layer, name in net.output_names.items()]
    return float(np.mean(errs))


@pytest.mark.parametrize("T, graph", [(4, "relu"), (8, "relu"), (8, "lean")])
def test_calibrate_to_T_lowers_the_error_at_T(tmp_path, T, graph):
    """relu: the classic graph of a ReLU detector (max-pool trees, channel norm); lean: a leaky one with graded
    neurons and count max-pools (the defaults),
    whose error at T is smaller to begin with (both sides of its neurons round), so less is left to correct."""
    path = tmp_path / "tiny.onnx"
    onnx.save(tiny_yolo(host=False, leaky=graph == "lean"), path)
    options = {"leaky": "graded", "maxpool": "count"} if graph == "lean" else {"maxpool": "exact", "norm": "channel"}
    base = compile_model(path, calib_random=16, progress=False, **options)
    tuned = compile_model(path, calib_random=16, progress=False, target_T=T, **options)
    assert graph == "relu" or any(l.neuron is not None and l.neuron.graded for l in tuned.network.layers)
    x = np.random.default_rng(11).random((8, 3, 32, 32), dtype=np.float32)  # not the calibration inputs
    ref = run_model(base.ratelimit, {"images": x})
    before, after = _head_error(base.network, ref, x, T), _head_error(tuned.network, ref, x, T)
    assert after < (0.97 if graph == "relu" else 1.0) * before, (before, after)
    assert tuned.stats["calibrate_to_T"]["T"] == T


@pytest.mark.parametrize("bad", [0, -3, 2.5, True])
def test_target_T_is_validated(bad):
    with pytest.raises(SnncError, match="--target-T"):
        CompileOptions(target_T=bad).validate()


def test_cli_bad_target_T_one_line_no_file(tmp_path, capsys):
    path = tmp_path / "tiny.onnx"
    onnx.save(tiny_yolo(host=False, leaky=False), path)
    out = tmp_path / "net.lava"
    rc = main(["compile", str(path), "--calib-random", "2", "--target-T", "0", "-o", str(out), "-q"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and err[0].startswith("snnc: error: --target-T")
    assert not out.exists()
