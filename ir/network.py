"""The lowered spiking network: a topologically ordered list of layers, what every backend consumes.

It is produced from the spiking ONNX graph by `snnc.compiler.lower.lower_to_network` and stored in a `.lava`
file by `snnc.ir.lavafile`. Semantics of one time step t (docs/neurons.md is the full definition):

    input   out(t) = image (direct encoding) or Poisson spikes of the image (rate encoding)
    conv    z(t) = conv(out_src(t), W) + b            (bias every step)
    deconv  z(t) = conv_transpose(out_src(t), W) + b
    dense   z(t) = W @ flatten(out_src(t)) + b
    concat  out(t) = concatenate(out_src(t) ..., channel axis)
    pad     out(t) = pad(out_src(t)) (mode "constant" with value 0, or "edge")
    maxpool out(t) = M(t) - M(t-1), M(t) = maxpool(S(t)), S(t) = sum of out_src(1..t), M(0) = 0: the running
            maximum of each window's spike counts (no padding; a stateful routing layer without neurons)
    then, for conv / deconv / dense:
      neuron is None: out(t) = z(t)                   (linear, e.g. a detection head read as membrane potential)
      neuron IF:      V += z; s = V >= theta; V -= s*theta; out(t) = s*theta
                      memory IF: also s = -1 where V < 0 and the neuron's count n of emitted spikes is > 0,
                      then V += theta; n += s (it takes back earlier spikes, never more than it emitted)
      neuron SignedIF: as IF, and s = -1 where V <= -theta/alpha, then V += theta/alpha; out(t) = s*theta
                      signed memory (SignedIF with memory): with n its count of +1 minus -1 spikes,
                      s = +1 where V >= theta and n >= 0 (V -= theta), or V > 0 and n < 0 (V -= theta/alpha);
                      s = -1 where V <= -theta/alpha and n <= 0 (V += theta/alpha), or V < 0 and n > 0
                      (V += theta); n += s (a spike first takes back one of the other sign)
                      graded (SignedIF with memory and graded): the same with theta_n (threshold_neg) in place
                      of theta/alpha, a -1 spike's out(t) is -alpha*theta_n, a +1's +theta, and the negative
                      side measured from the level r = v_init (theta + theta_n) instead of 0: -1 where
                      V <= r - theta_n and n <= 0 (not after a +1), +1 where V > r and n < 0, so V(0) rounds
                      both sides (docs/neurons.md)

An output (Network.outputs) is decoded as mean over t of out(t) (membrane decoding) by default.
Shapes are per sample, channels first (C, H, W); a batch axis is added by the simulators.
"""

from __future__ import annotations

import dataclasses

from dataclasses import dataclass, field
from typing import Any

import numpy as np

NEURON_KINDS = ("IF", "SignedIF")
LAYER_OPS = ("input", "conv", "deconv", "dense", "concat", "pad", "maxpool")


@dataclass
class Neuron:
    """A population's neuron model; `threshold` is per output channel (shape (C,))."""

    kind: str  # "IF" or "SignedIF"
    threshold: np.ndarray  # positive threshold theta per channel, float32, shape (C,)
    alpha: float = 0.0  # SignedIF: negative threshold is -theta/alpha; unused for IF
    v_init: float = 0.0  # initial membrane potential as a fraction of theta (0.0 or 0.5 typically)
    reset: str = "subtract"  # the only reset snnc implements: keep the excess over threshold
    memory: bool = False  # spikes take back earlier spikes of the other sign (IF: -1 when V < 0; docs/neurons.md)
    # graded signed memory neuron (`--leaky graded`): its own negative threshold theta_n per channel, and a -1
    # spike carries -alpha * theta_n downstream instead of -theta (docs/neurons.md)
    graded: bool = False
    threshold_neg: np.ndarray | None = None  # theta_n per channel, float32, shape (C,); graded only

    def __post_init__(self) -> None:
        if self.kind not in NEURON_KINDS:
            raise ValueError(f"unknown neuron kind {self.kind!r}; expected one of {NEURON_KINDS}")
        self.threshold = np.asarray(self.threshold, dtype=np.float32).reshape(-1)
        if self.kind == "SignedIF" and not self.alpha > 0:
            raise ValueError("SignedIF needs alpha > 0")
        self.memory = bool(self.memory)
        self.graded = bool(self.graded)
        if self.graded:
            if self.kind != "SignedIF" or not self.memory or self.threshold_neg is None:
                raise ValueError("a graded neuron is a SignedIF with memory and a negative threshold per channel")
            self.threshold_neg = np.asarray(self.threshold_neg, dtype=np.float32).reshape(-1)
        elif self.threshold_neg is not None:
            raise ValueError("threshold_neg is for graded neurons only")

    @property
    def neg_threshold(self) -> np.ndarray:
        """Magnitude of the negative threshold: theta/alpha (SignedIF), theta_n (graded)."""
        if self.graded:
            return self.threshold_neg * np.ones_like(self.threshold)
        return self.threshold / np.float32(self.alpha)

    @property
    def neg_level(self) -> np.ndarray:
        """r per channel, float32: the membrane level the negative side counts from. Graded: v_init (theta +
        theta_n), so that V(0) = v_init theta rounds the negative side as it rounds the positive one; else 0."""
        if self.graded:
            return (self.v_init * (self.threshold.astype(np.float64) + self.neg_threshold)).astype(np.float32)
        return np.zeros_like(self.threshold)

    @property
    def neg_payload(self) -> np.ndarray:
        """What a -1 spike carries downstream (magnitude, per channel): theta, or alpha * theta_n if graded."""
        if self.graded:
            return (np.float32(self.alpha) * self.neg_threshold).astype(np.float32)
        return self.threshold


@dataclass
class Layer:
    """One connection (or routing) op with an optional neuron population on its output.

    Weights use the ONNX layouts: conv (C_out, C_in/group, kh, kw); deconv (C_in, C_out/group, kh, kw);
    dense (C_out, C_in). attrs holds: conv/deconv `strides` [sh, sw], `pads` [top, left, bottom, right],
    `dilations` [dh, dw], `group`; deconv also `output_padding` [oh, ow]; concat `axis` (always 0 here, the
    channel axis of a sample); pad `pads` [top, left, bottom, right], `mode` ("constant" or "edge"); maxpool
    `kernel_shape` [kh, kw], `strides` [sh, sw].
    """

    name: str
    op: str
    inputs: list[str]
    shape: tuple[int, ...]  # output shape per sample, (C, H, W) or (C,)
    weight: np.ndarray | None = None
    bias: np.ndarray | None = None
    attrs: dict[str, Any] = field(default_factory=dict)
    neuron: Neuron | None = None

    def __post_init__(self) -> None:
        if self.op not in LAYER_OPS:
            raise ValueError(f"layer {self.name}: unknown op {self.op!r}; expected one of {LAYER_OPS}")
        self.shape = tuple(int(d) for d in self.shape)


@dataclass
class Network:
    """A spiking network ready for simulation or code generation."""

    layers: list[Layer]
    outputs: list[str]  # names of the layers whose values are decoded (the detection heads)
    input_encoding: dict[str, Any] = field(default_factory=lambda: {"kind": "direct", "scale": 1.0 / 255.0})
    preprocess: dict[str, Any] = field(default_factory=dict)  # how a photo becomes the input tensor
    output_names: dict[str, str] = field(default_factory=dict)  # layer name -> ONNX tensor name the host reads
    host_onnx: bytes | None = None  # serialized ONNX host graph (box decoding, NMS), or None
    ann_onnx: bytes | None = None  # the original ANN (static shapes, whole model) for side-by-side runs
    meta: dict[str, Any] = field(default_factory=dict)  # provenance, calibration statistics, class names
    # set by lavafile.load, not saved: the source file an ANN kept by reference was read from, or why it is missing
    ann_note: str = ""

    def __post_init__(self) -> None:
        names = [layer.name for layer in self.layers]
        if len(set(names)) != len(names):
            raise ValueError("layer names must be unique")
        known: set[str] = set()
        for layer in self.layers:
            for src in layer.inputs:
                if src not in known:
                    raise ValueError(f"layer {layer.name}: input {src!r} is not an earlier layer")
            known.add(layer.name)
        for out in self.outputs:
            if out not in known:
                raise ValueError(f"output {out!r} is not a layer")

    def layer(self, name: str) -> Layer:
        for layer in self.layers:
            if layer.name == name:
                return layer
        raise KeyError(name)

    @property
    def input_layers(self) -> list[Layer]:
        return [layer for layer in self.layers if layer.op == "input"]

    @property
    def neuron_layers(self) -> list[Layer]:
        return [layer for layer in self.layers if layer.neuron is not None]

    def with_v_init(self, v_init: float | None) -> "Network":
        """A shallow copy whose neurons start at v_init * theta (the simulators' override); self if None."""
        if v_init is None:
            return self
        layers = [dataclasses.replace(l, neuron=dataclasses.replace(l.neuron, v_init=float(v_init)))
                  if l.neuron is not None else l for l in self.layers]
        return dataclasses.replace(self, layers=layers)
