"""ONNX -> torch module for the ops snnc converts, so the ANN can be fine-tuned (`snnc finetune`).

Our own small importer rather than onnx2torch / onnx2pytorch: the graph here is the spiking part snnc has
already prepared (static shapes, opset 17, constants folded), the op set is the short list below, and fine-tuning
needs two things a generic converter does not give: every weight addressable by its ONNX initializer name (to
write the trained values back into the same ONNX file) and every activation replaceable by a QCFS module.

Supported: Conv, ConvTranspose, BatchNormalization (inference form; its scale and shift train), Relu, LeakyRelu,
Clip, MaxPool, AveragePool, Resize / Upsample (nearest, integer scales), Concat, Add, Sub, Mul, Div, Pad
(constant / edge / reflect), Identity. Anything else: UnsupportedOpError naming the node.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import onnx
import torch
import torch.nn.functional as F
from onnx import numpy_helper

from snnc.ir.errors import UnsupportedOpError

ACTIVATIONS = ("Relu", "LeakyRelu")
TRAINABLE = {"Conv": (1, 2), "ConvTranspose": (1, 2), "BatchNormalization": (1, 2)}  # input slots that train


def _attrs(node: onnx.NodeProto) -> dict:
    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


def _label(node: onnx.NodeProto) -> str:
    return f"{node.op_type} node '{node.name or '<unnamed>'}'"


def _pads2(pads: list[int]) -> tuple[int, int, int, int]:
    """ONNX [top, left, bottom, right] -> F.pad's (left, right, top, bottom)."""
    return (pads[1], pads[3], pads[0], pads[2])


class OnnxModule(torch.nn.Module):
    """The graph as a torch module: forward(x) returns the graph outputs in order (a tuple).

    `params` holds the trainable initializers (conv weights and biases, BN scale and shift) under sanitized
    names; `param_names` maps them back to ONNX names. `activations` maps an activation node's name to the module
    that computes it (torch.nn.Identity placeholders until `replace_activation`).
    """

    def __init__(self, model: onnx.ModelProto) -> None:
        super().__init__()
        g = model.graph
        inits = {i.name: numpy_helper.to_array(i) for i in g.initializer}
        for n in g.node:
            if n.op_type == "Constant":
                v = _attrs(n).get("value")
                if isinstance(v, onnx.TensorProto):
                    inits[n.output[0]] = numpy_helper.to_array(v)
        trainable = {n.input[i] for n in g.node for i in TRAINABLE.get(n.op_type, ()) if i < len(n.input)}
        self.params = torch.nn.ParameterDict()
        self.param_names: dict[str, str] = {}
        self.consts: dict[str, torch.Tensor] = {}
        for name, value in inits.items():
            if name in trainable and value.dtype.kind == "f":
                key = f"p{len(self.param_names)}"
                self.params[key] = torch.nn.Parameter(torch.from_numpy(value.astype(np.float32).copy()))
                self.param_names[key] = name
            else:
                self.consts[name] = torch.from_numpy(np.array(value))
        self._key = {v: k for k, v in self.param_names.items()}
        self.input_name = [i.name for i in g.input if i.name not in inits][0]
        self.output_names = [o.name for o in g.output]
        self.nodes = [n for n in g.node if n.op_type != "Constant"]
        self.activations = torch.nn.ModuleDict()
        self._act_keys: dict[str, str] = {}
        self._fns: list[Callable] = [self._compile(n) for n in self.nodes]

    def _value(self, env: dict, name: str) -> torch.Tensor | None:
        if not name:
            return None
        if name in env:
            return env[name]
        if name in self._key:
            return self.params[self._key[name]]
        return self.consts[name]

    def replace_activation(self, node_name: str, module: torch.nn.Module) -> None:
        self.activations[self._act_keys[node_name]] = module

    def activation(self, node_name: str) -> torch.nn.Module:
        """The module that computes an activation node."""
        return self.activations[self._act_keys[node_name]]

    def activation_nodes(self) -> list[onnx.NodeProto]:
        return [n for n in self.nodes if n.op_type in ACTIVATIONS]

    def _compile(self, node: onnx.NodeProto) -> Callable:
        op, a = node.op_type, _attrs(node)
        if op in ("Conv", "ConvTranspose"):
            if a.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET", b"VALID", "VALID"):
                raise UnsupportedOpError(f"{_label(node)}: auto_pad is not supported; re-export with pads")
            pads = list(a.get("pads", [0, 0, 0, 0]))
            sym = pads[0] == pads[2] and pads[1] == pads[3]
            kw = dict(stride=tuple(a.get("strides", [1, 1])), dilation=tuple(a.get("dilations", [1, 1])),
                      groups=int(a.get("group", 1)))
            if op == "Conv":
                def conv(x, w, b=None):
                    if not sym:
                        x, p = F.pad(x, _pads2(pads)), (0, 0)
                    else:
                        p = (pads[0], pads[1])
                    return F.conv2d(x, w, b, padding=p, **kw)
                return conv
            if not sym:
                raise UnsupportedOpError(f"{_label(node)}: asymmetric ConvTranspose pads are not supported")
            out_pad = tuple(a.get("output_padding", [0, 0]))
            return lambda x, w, b=None: F.conv_transpose2d(x, w, b, padding=(pads[0], pads[1]), output_padding=out_pad,
                                                      **kw)
        if op == "BatchNormalization":
            eps = float(a.get("epsilon", 1e-5))
            return lambda x, s, b, m, v: F.batch_norm(x, m, v, s, b, training=False, eps=eps)
        if op in ACTIVATIONS:
            key = f"a{len(self._act_keys)}"
            self._act_keys[node.name] = key
            self.activations[key] = torch.nn.ReLU() if op == "Relu" else torch.nn.LeakyReLU(float(a.get("alpha", 0.01)))
            return lambda x: self.activations[key](x)
        if op == "Clip":
            return lambda x, lo=None, hi=None: torch.clamp(x, None if lo is None else float(lo),
                                                           None if hi is None else float(hi))
        if op in ("MaxPool", "AveragePool"):
            k = tuple(a["kernel_shape"])
            s = tuple(a.get("strides", [1, 1]))
            pads = list(a.get("pads", [0, 0, 0, 0]))
            ceil = bool(a.get("ceil_mode", 0))
            if a.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET"):
                raise UnsupportedOpError(f"{_label(node)}: auto_pad is not supported; re-export with pads")
            if op == "MaxPool":
                return lambda x: F.max_pool2d(F.pad(x, _pads2(pads), value=float("-inf")), k, s, ceil_mode=ceil)
            return lambda x: F.avg_pool2d(F.pad(x, _pads2(pads)), k, s, ceil_mode=ceil)
        if op in ("Resize", "Upsample"):
            mode = a.get("mode", b"nearest")
            mode = mode.decode() if isinstance(mode, bytes) else mode
            if mode != "nearest":
                raise UnsupportedOpError(f"{_label(node)}: only nearest resizing is supported")

            def resize(x, *rest):
                scales = rest[1] if op == "Resize" and len(rest) > 1 else (rest[0] if rest else None)
                sizes = rest[2] if op == "Resize" and len(rest) > 2 else None
                if sizes is not None and sizes.numel():
                    return F.interpolate(x, size=[int(v) for v in sizes[2:]], mode="nearest")
                return F.interpolate(x, scale_factor=[float(v) for v in scales[2:]], mode="nearest")
            return resize
        if op == "Concat":
            axis = int(a.get("axis", 1))
            return lambda *xs: torch.cat(xs, dim=axis)
        binary = {"Add": torch.add, "Sub": torch.sub, "Mul": torch.mul, "Div": torch.div}
        if op in binary:
            return binary[op]
        if op == "Pad":
            mode = a.get("mode", b"constant")
            mode = mode.decode() if isinstance(mode, bytes) else mode

            def pad(x, pads, value=None, axes=None):
                if axes is not None:
                    raise UnsupportedOpError(f"{_label(node)}: Pad with axes is not supported")
                p = [int(v) for v in pads]
                r = len(p) // 2
                if any(p[:2]) or any(p[r:r + 2]):
                    raise UnsupportedOpError(f"{_label(node)}: only spatial padding is supported")
                tp = []
                for i in reversed(range(2, r)):
                    tp += [p[i], p[i + r]]
                if mode == "constant":
                    return F.pad(x, tp, value=0.0 if value is None or value.numel() == 0 else float(value))
                return F.pad(x, tp, mode={"edge": "replicate", "reflect": "reflect"}[mode])
            return pad
        if op == "Identity":
            return lambda x: x
        raise UnsupportedOpError(f"{_label(node)}: snnc finetune cannot import this op (supported: Conv, "
                                 "ConvTranspose, BatchNormalization, Relu, LeakyRelu, Clip, MaxPool, AveragePool, "
                                 "Resize, Concat, Add, Sub, Mul, Div, Pad)")

    def forward(self, x: torch.Tensor, record: dict | None = None, overrides: dict[str, Callable] | None = None,
                snap: dict[str, torch.Tensor] | None = None) -> tuple[torch.Tensor, ...]:
        """`record`: filled with each activation node's (input name, input). `overrides`: node name -> a function
        that computes that node instead (the spiking forward of training/tandem.py). `snap`: activation node name
        -> the value its output takes in the forward pass, its gradient staying the activation's own
        (straight-through: tandem learning)."""
        env = {self.input_name: x}
        for node, fn in zip(self.nodes, self._fns):
            args = [self._value(env, name) for name in node.input]
            while args and args[-1] is None:
                args.pop()
            if overrides and node.name in overrides:
                fn = overrides[node.name]
            y = fn(*args)
            if snap is not None and node.name in snap:
                y = y + (snap[node.name] - y).detach()
            env[node.output[0]] = y
            if record is not None and node.op_type in ACTIVATIONS:
                record[node.name] = node.input[0], env[node.input[0]]
        return tuple(env[n] for n in self.output_names)

    def node_function(self, node_name: str) -> Callable:
        """The function that computes a node (its inputs as arguments)."""
        return self._fns[[n.name for n in self.nodes].index(node_name)]

    def trained_initializers(self) -> dict[str, np.ndarray]:
        """The trainable initializers' current values by ONNX name."""
        return {self.param_names[k]: p.detach().cpu().numpy().astype(np.float32) for k, p in self.params.items()}


def import_onnx(model: onnx.ModelProto) -> OnnxModule:
    """The ONNX graph (static shapes, constants folded: snnc's prepared spiking part) as a torch module."""
    return OnnxModule(model)
