"""A stable text dump of a graph for golden tests and diffs: nodes with attributes, initializers as shape and sums.

Weights are summarized (shape, dtype, sum and sum of |w| to 5 significant digits) so dumps stay small and
readable while any change to a folded weight still shows.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import numpy_helper


def _fmt_attr(a: onnx.AttributeProto) -> str:
    v = onnx.helper.get_attribute_value(a)
    if isinstance(v, bytes):
        return v.decode()
    if isinstance(v, float):
        return f"{v:.6g}"
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(f"{x:.6g}" if isinstance(x, float) else str(x) for x in v) + "]"
    if isinstance(v, onnx.TensorProto):
        return _fmt_array(numpy_helper.to_array(v))
    return str(v)


def _fmt_array(arr: np.ndarray) -> str:
    a = arr.astype(np.float64)
    return (f"{arr.dtype}{list(arr.shape)} sum={float(a.sum()):.5g} abs={float(np.abs(a).sum()):.5g}"
            if arr.size > 8 else f"{arr.dtype}{list(arr.shape)} {np.round(a, 6).tolist()}")


def graph_dump(model: onnx.ModelProto) -> str:
    g = model.graph
    inits = {i.name: numpy_helper.to_array(i) for i in g.initializer}
    lines = ["inputs: " + ", ".join(f"{i.name}" for i in g.input if i.name not in inits),
             "outputs: " + ", ".join(o.name for o in g.output)]
    for n in g.node:
        op = f"{n.domain}.{n.op_type}" if n.domain else n.op_type
        attrs = ", ".join(f"{a.name}={_fmt_attr(a)}" for a in sorted(n.attribute, key=lambda a: a.name))
        lines.append(f"{op} {n.name}({', '.join(n.input)}) -> {', '.join(n.output)}" + (f" {{{attrs}}}" if attrs else ""))
        for name in n.input:
            if name in inits:
                lines.append(f"    {name}: {_fmt_array(inits[name])}")
    return "\n".join(lines) + "\n"
