"""CompileOptions / SimOptions: the one source of defaults, validated once, honoured by the CLI and every backend."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

from snnc.apps.cli import build_parser, compile_options_from
from snnc.backends import get_backend
from snnc.compiler.pipeline import select_passes
from snnc.ir.errors import SnncError
from snnc.ir.network import Layer, Network, Neuron
from snnc.ir.options import CompileOptions, SimOptions, checkpoints, compile_options, sim_options


def test_cli_defaults_are_compile_options_defaults():
    args = build_parser().parse_args(["compile", "m.onnx", "-o", "x.lava"])
    assert compile_options_from(args) == CompileOptions()


def test_cli_choices_reach_the_options():
    args = build_parser().parse_args(["compile", "m.onnx", "-o", "x.lava", "--leaky", "ibt", "--norm", "layer",
                                      "--v-init", "zero", "--percentile", "99.5", "--skip", "channel_norm"])
    opts = compile_options_from(args)
    assert (opts.leaky, opts.norm, opts.v_init, opts.percentile, opts.skip) == ("ibt", "layer", 0.0, 99.5,
                                                                                ("channel_norm",))


def test_leaky_ibt_leaves_out_the_split_pass_in_the_api_too():
    split = select_passes(CompileOptions(leaky="split"))
    assert "split_leaky_relu" in split and "split_leaky_relu" not in select_passes(CompileOptions())  # graded
    assert select_passes(CompileOptions(leaky="ibt")) == [p for p in split if p != "split_leaky_relu"]


@pytest.mark.parametrize("change, word", [
    (dict(percentile=math.nan), "--percentile"), (dict(percentile=0.0), "--percentile"),
    (dict(percentile=100.5), "--percentile"), (dict(norm="row"), "--norm"), (dict(leaky="relu"), "--leaky"),
    (dict(v_init=math.inf), "--v-init"), (dict(v_init=-0.1), "--v-init"), (dict(calib_batch=0), "calib_batch"),
    (dict(neuron="lif"), "--neuron"), (dict(maxpool="avg"), "--maxpool")])
def test_bad_compile_options_are_refused_by_name(change, word):
    with pytest.raises(SnncError, match=word):
        compile_options(**change)


def test_unknown_compile_option_is_refused():
    with pytest.raises(SnncError, match="unknown compile option"):
        compile_options(percentil=99.0)


def test_record_round_trip_and_old_files_keep_old_defaults():
    opts = CompileOptions(norm="layer", leaky="ibt", v_init=0.0)
    assert CompileOptions.from_record(opts.record()) == opts
    old = CompileOptions.from_record({"norm": "channel"})  # a file from before percentile/v_init/neuron existed
    assert (old.percentile, old.v_init, old.neuron) == (99.9, 0.0, "plain")


@pytest.mark.parametrize("change, word", [
    (dict(mode="double"), "--mode"), (dict(decode="rate"), "--decode"), (dict(seed=-1), "--seed"),
    (dict(weight_bits=0), "--weight-bits"), (dict(weight_bits=40), "--weight-bits"), (dict(device="tpu"), "--device"),
    (dict(v_init=math.nan), "--v-init"), (dict(encoding="poisson"), "--encoding"), (dict(threads=0), "threads")])
def test_bad_sim_options_are_refused_by_name(change, word):
    with pytest.raises(SnncError, match=word):
        sim_options(**change)


def _tiny() -> Network:
    layers = [Layer("x", "input", [], (2,)),
              Layer("n", "dense", ["x"], (1,), np.ones((1, 2), np.float32), None, {},
                    Neuron("IF", np.ones(1, np.float32), v_init=0.5))]
    return Network(layers, ["n"], input_encoding={"kind": "direct", "scale": 1.0})


def test_backend_refuses_an_extra_it_does_not_know():
    x = np.full((1, 2), 0.3, np.float32)
    with pytest.raises(SnncError, match="does not support record_layers"):
        get_backend("c").simulate(_tiny(), x, 4, record_layers=True)
    res = get_backend("numpy").simulate(_tiny(), x, [2, 4], SimOptions(mode="fixed"))
    assert sorted(res.outputs) == [2, 4]


def test_cpu_only_backends_refuse_a_gpu():
    with pytest.raises(SnncError, match="CPU only"):
        get_backend("numpy").simulate(_tiny(), np.zeros((1, 2), np.float32), 4, device="cuda")


@pytest.mark.parametrize("text, want", [("8", [8]), ("64,8, 8", [8, 64]), (16, [16]), ([4, 2], [2, 4]),
                                        (np.int64(3), [3])])
def test_checkpoints_parse(text, want):
    assert checkpoints(text) == want


@pytest.mark.parametrize("text", ["", "0", "-4", "a,b", "8,,x", "1.5", 10**9, [0, 2]])
def test_checkpoints_refuse(text):
    with pytest.raises(SnncError, match="-T"):
        checkpoints(text)


def test_options_are_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        CompileOptions().norm = "layer"  # type: ignore[misc]
