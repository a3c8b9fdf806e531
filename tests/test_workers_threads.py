"""Ray workers of `snnc eval --workers N` size every onnxruntime session to their share of the cores."""

from __future__ import annotations

import onnx
from onnx import TensorProto, helper

from snnc.ir import ort


def _identity() -> onnx.ModelProto:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "g", [x], [y])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_default_threads_apply_to_sessions_without_threads():
    try:
        ort.set_default_threads(1)
        opts = ort.ort_session(_identity()).get_session_options()
        assert opts.intra_op_num_threads == 1 and opts.inter_op_num_threads == 1
        assert opts.get_session_config_entry("session.intra_op.allow_spinning") == "0"
        assert ort.ort_session(_identity(), threads=3).get_session_options().intra_op_num_threads == 3
    finally:
        ort.set_default_threads(None)
    assert ort.ort_session(_identity()).get_session_options().intra_op_num_threads == 0  # onnxruntime's default
