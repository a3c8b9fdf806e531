"""activations_to_neurons: ANN activations -> spiking neuron ops of the `snnc` domain.

    Relu               -> snnc.IF(threshold=1, calibrated=0)          rate limit clip(z, 0, theta)
    LeakyRelu(alpha)   -> snnc.SignedIF(threshold=1, alpha)           rate limit clip(leaky(z), -theta, theta)
                          memory=1 with `--leaky signed` (the signed memory neuron) and for the
                          leaky layers `--leaky split` leaves unsplit; 0 (IBT) with `--leaky ibt`;
                          `--leaky graded` adds graded=1 and threshold_neg=1/alpha (the signed
                          memory neuron's negative side, until channel_norm sets it from data)
    Clip(0, lam)       -> snnc.IF(threshold=lam, calibrated=1)        exact in the rate limit
    QCFS(lam, L)       -> snnc.IF(threshold=lam, v_init=0.5, calibrated=1)   (Bu et al.: zero expected error at T=L)
    signed QCFS        -> snnc.SignedIF(threshold=lam+, threshold_neg=lam-, graded=1, memory=1, v_init=0.5,
    (lam+, lam-, L)       calibrated=1) under `--leaky graded`: counts floor(T z/lam+ + 1/2) above 0 and
                          -floor(-T z/lam- + 1/2) below, the trained QCFS at T = L (compiler/qcfs.py);
                          `--leaky split` splits it into IF pairs first

Every new neuron starts at V(0) = v_init * theta, option `v_init` (`--v-init`, default 0.5: theta/2).
IF neurons get memory=1 (option `neuron`, `--neuron memory`, the default; `plain` for the papers' IF): they emit
a -1 spike, taking back an earlier +1, when V < 0 and they have emitted more +1 than -1 spikes, and then add theta
back to V (docs/neurons.md). Their count then follows floor((V(0) + sum z) / theta) clipped at 0 instead of the
running maximum of that sum, which is what removes most of the unevenness error (docs/methods.md section 5).
IF: V += z; spike when V >= theta; V -= theta (reset by subtraction). SignedIF also spikes -1 when
V <= -theta/alpha and then adds theta/alpha back (docs/neurons.md); with memory=1 (`--leaky signed`) a spike of
either sign first takes back one of the other sign, so its count follows leaky(V(0) + sum z) / theta. `threshold` is a per-channel list (or one
value); `calibrated=0` marks thresholds that `channel_norm` must still set from data (1.0 until then, in the
ANN's units). Neurons sit directly on a convolution's output: the head convolutions have no activation and stay
linear, read out as membrane potential.

The QCFS activation is recognised as the chain Mul(L/lam) -> Add(0.5) -> Floor -> Div(L) (or Mul(1/L))
-> Clip(0, 1) -> Mul(lam) that its ONNX export produces.

Refused, with the node named: any other activation in the spiking part (Sigmoid, SiLU, Mish, Tanh, ...):
retrain with ReLU / LeakyReLU / Clip / QCFS, or cut the graph before it.
"""

from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from snnc.ir.errors import UnsupportedOpError
from snnc.compiler.graph import SNNC_DOMAIN, const_scalar, node_label, producer
from snnc.compiler.qcfs import match_qcfs_chain, match_signed_qcfs
from snnc.compiler.registry import Pass, PassContext, register_pass

REFUSED = ("Sigmoid", "HardSigmoid", "HardSwish", "Tanh", "Mish", "Softplus", "Softsign", "Elu", "Selu",
           "Celu", "Gelu", "PRelu", "ThresholdedRelu", "Erf", "Exp", "Log", "Softmax", "Swish")
NEURON_SOURCES = ("Conv", "ConvTranspose")


def _refuse(node: gs.Node) -> None:
    extra = ""
    times_x = any(c.op == "Mul" for c in node.outputs[0].outputs)
    if node.op == "Sigmoid" and times_x:
        extra = " (part of SiLU/Swish)"
    elif (node.op == "HardSigmoid" and times_x) or node.op == "HardSwish":
        extra = " (part of Hardswish)" if node.op == "HardSigmoid" else ""
    raise UnsupportedOpError(
        f"{node_label(node)}{extra} inside the spiking part has no spiking neuron; options: retrain or fine-tune "
        "the model with ReLU (or LeakyReLU, Clip(0, lambda), QCFS) in its place, or cut the model before it so it "
        "runs on the host")


def _neuron(op: str, name: str, x: gs.Tensor, y: gs.Tensor, **attrs) -> gs.Node:
    y.shape = x.shape if y.shape is None else y.shape
    return gs.Node(op, name, attrs=attrs, inputs=[x], outputs=[y], domain=SNNC_DOMAIN)


def _check_source(node: gs.Node, x: gs.Tensor) -> None:
    src = producer(x)
    if src is None or src.op not in NEURON_SOURCES:
        what = "the graph input" if src is None else node_label(src)
        raise UnsupportedOpError(f"{node_label(node)} follows {what}; a spiking neuron must sit on a "
                                 "convolution's output (put the activation right after a Conv)")


@register_pass
class ActivationsToNeurons(Pass):
    name = "activations_to_neurons"
    summary = ("ReLU -> IF, LeakyReLU (unsplit) -> signed neuron (IBT, or memory with --leaky signed/split, "
               "graded with --leaky graded), "
               "Clip(0,l)/QCFS -> IF(l); refuses other activations")
    exact = False  # exact in the rate limit only up to clipping at theta; channel_norm sets theta

    def run(self, graph: gs.Graph, ctx: PassContext) -> gs.Graph:
        counts = {"IF": 0, "SignedIF": 0}
        v_init = float(ctx.options.v_init)  # QCFS neurons always start at theta/2
        memory = int(ctx.options.neuron == "memory")
        # under `split`, the only LeakyReLUs left here are those split_leaky_relu cannot split (one feeding a
        # spike-count max-pool): they get the signed memory neuron too, which is more accurate than IBT
        signed_memory = int(ctx.options.leaky in ("signed", "split", "graded"))
        # --leaky graded: channel_norm gives the negative side its own threshold, -1 spikes carry alpha * theta_n
        graded = {"graded": 1} if ctx.options.leaky == "graded" else {}
        for node in list(graph.nodes):
            if not node.outputs or node.domain == SNNC_DOMAIN:
                continue
            if node.op in REFUSED:
                _refuse(node)
            x = node.inputs[0] if node.inputs else None
            new = None
            if node.op == "Relu":
                _check_source(node, x)
                new = _neuron("IF", node.name, x, node.outputs[0], threshold=[1.0], v_init=v_init, calibrated=0,
                              memory=memory)
            elif node.op == "LeakyRelu":
                alpha = float(node.attrs.get("alpha", 0.01))
                if not 0 < alpha < 1:
                    raise UnsupportedOpError(f"{node_label(node)}: alpha={alpha}; the signed neuron needs 0 < alpha < 1")
                _check_source(node, x)
                # IBT: no attribute (memory 0), as before
                extra = {"memory": 1, **graded} if signed_memory else {}
                if graded:  # theta/alpha: the signed memory neuron's negative side, for graphs that skip channel_norm
                    extra["threshold_neg"] = [1.0 / alpha]
                new = _neuron("SignedIF", node.name, x, node.outputs[0], threshold=[1.0], alpha=alpha, v_init=v_init,
                              calibrated=0, **extra)
            elif node.op == "Clip":
                lo = const_scalar(node.inputs[1]) if len(node.inputs) > 1 and node.inputs[1].name else None
                hi = const_scalar(node.inputs[2]) if len(node.inputs) > 2 and node.inputs[2].name else None
                if producer(x) is not None and producer(x).op == "Div":
                    continue  # inside a QCFS chain, handled from its first Mul
                if lo != 0.0 or hi is None or hi <= 0:
                    raise UnsupportedOpError(f"{node_label(node)}: only Clip(0, lambda) with constant lambda > 0 "
                                             "is a spiking neuron")
                _check_source(node, x)
                new = _neuron("IF", node.name, x, node.outputs[0], threshold=[hi], v_init=v_init, calibrated=1,
                              memory=memory)
            elif node.op == "Mul" and producer(node.inputs[0]) is not None \
                    and producer(node.inputs[0]).op in NEURON_SOURCES:
                signed = match_signed_qcfs(x)
                if signed is not None and not graded:
                    raise UnsupportedOpError(f"{node_label(node)}: a signed QCFS (a fine-tuned LeakyReLU) becomes one "
                                             "graded neuron (--leaky graded, the default) or two IF neurons "
                                             "(--leaky split); drop --leaky ibt / signed / --skip split_leaky_relu")
                if signed is not None:  # theta = lam+, theta_n = lam-: the count at T = L is the trained QCFS's
                    chain = signed.nodes
                    new = _neuron("SignedIF", node.name + "_qcfs", x, signed.out,
                                  threshold=[float(v) for v in signed.lam_pos],
                                  threshold_neg=[float(v) for v in signed.lam_neg], alpha=signed.alpha,
                                  v_init=0.5, calibrated=1, qcfs_levels=signed.levels, memory=1, graded=1)
                else:
                    match = match_qcfs_chain(node, graph)
                    if match is None or np.any(match[1] <= 0):  # a negative scale: half of a signed QCFS
                        continue
                    chain, _, lam, levels = match
                    new = _neuron("IF", node.name + "_qcfs", x, chain[-1].outputs[0],
                                  threshold=[float(v) for v in lam], v_init=0.5,
                                  calibrated=1, qcfs_levels=levels, memory=memory)
                for n in chain:
                    n.inputs.clear()
                    n.outputs.clear()
            if new is not None:
                node.inputs.clear()
                node.outputs.clear()
                graph.nodes.append(new)
                counts[new.op] += 1
        ctx.stats.setdefault(self.name, {}).update(counts)
        self.rewrites = sum(counts.values())
        return graph

    def ensures(self, graph: gs.Graph) -> None:
        left = [n for n in graph.nodes if n.op in ("Relu", "LeakyRelu") and n.domain != SNNC_DOMAIN]
        assert not left, f"activations left: {[n.name for n in left]}"
