"""Does a Network fit on Intel Loihi 2? Per layer: neurons, synapses, fan-in, weight bits, accumulator bits, and
an estimate of the neuro-cores it needs; then the chip count. `fit(net)` gives the data, `fit_report(net)` text.

Published Loihi 2 limits (Intel, "Taking Neuromorphic Computing to the Next Level with Loihi 2", technology
brief, 2021; Davies et al.): 128 neuro-cores per chip; up to 1,048,576 neurons per chip, i.e. 8,192 per core;
up to 120 million synapses per chip; about 128 KB of synaptic memory per core (of the core's flexibly
partitioned SRAM); weights of at most 8 bits (plus a shared exponent); 24-bit dendritic accumulators (the
fixed-point Conv model of lava-nc wraps at 24 bits too). These are capacity limits, not a mapping: the real
count depends on Intel's proprietary compiler (state memory, axon routing and compression all share the SRAM).

The estimate, per connection layer with C output channels of P positions each, fan-in F and b-bit weights:
- conv / deconv use Loihi 2's weight sharing: a core holding c channels stores their c * F * b / 8 bytes of
  kernels once, whatever positions it holds. So c <= min(C, 128 KB / (F b / 8)), positions per core
  p <= 8192 / c, and the layer needs ceil(C / c) * ceil(P / p) cores.
- dense: no sharing; a core holding n neurons stores n * F * b / 8 bytes: n <= min(8192, 128 KB / (F b / 8)).
Explicit synapses (each nonzero connection, counted for the 120 M chip limit) are reported as well: they are
what a mapping without weight sharing would need. pad / concat layers need no cores (they are routing). A
count max-pool layer (`--maxpool count`) is counted as one programmable (microcode) neuron per output that
keeps its window's K running counts and their maximum (K + 1 state variables, fan-in K, 1-bit weights), 8,192
per core: Loihi 2's standard neuron models cannot take a maximum, so it needs a custom neuron program.

Memory IF neurons (docs/neurons.md, the default for IF) keep one more state variable per neuron than an IF
neuron: the count n of +1 minus -1 spikes, 0 <= n <= T, i.e. log2(T) + 1 bits (9 at T = 256), next to the
membrane; and they send signed spikes (graded spikes on Loihi 2). The report counts them and says so; it does
not reduce the neurons per core for the larger state (8,192 per core is Loihi 2's figure for its neurons).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from snnc.ir.fixedpoint import GRADED_BITS
from snnc.ir.network import Layer, Network

CORES_PER_CHIP = 128
NEURONS_PER_CORE = 8192
NEURONS_PER_CHIP = CORES_PER_CHIP * NEURONS_PER_CORE
SYNAPSES_PER_CHIP = 120_000_000
SYNAPTIC_BYTES_PER_CORE = 128 * 1024
MAX_WEIGHT_BITS = 8
ACCUMULATOR_BITS = 24


@dataclass
class LayerFit:
    name: str
    op: str
    neurons: int
    synapses: int  # explicit (nonzero, in-bounds) connections
    fan_in: int  # largest number of inputs of one neuron
    weight_bits: int
    acc_bits: int  # bits of the largest possible |z| in fixed point (sign included)
    cores: int
    note: str = ""
    memory: bool = False  # memory IF neurons: one more state variable (the count n) per neuron


@dataclass
class Fit:
    layers: list[LayerFit]
    weight_bits: int
    cores: int = 0
    neurons: int = 0
    synapses: int = 0
    chips: int = 1
    memory_neurons: int = 0  # neurons that are memory IF (one more state variable each)
    problems: list[str] = field(default_factory=list)

    @property
    def fits(self) -> bool:
        return self.chips == 1 and not self.problems


def _explicit_synapses(layer: Layer, in_shape: tuple[int, ...]) -> tuple[int, int]:
    """(nonzero in-bounds connections, largest fan-in) of a conv / deconv / dense layer."""
    w = layer.weight
    if layer.op == "dense":
        nz = (w != 0).sum(axis=1)
        return int(nz.sum()), int(nz.max(initial=0))
    a = layer.attrs
    sh, sw = (int(s) for s in a.get("strides", [1, 1]))
    pt, pl = (int(p) for p in a.get("pads", [0, 0, 0, 0])[:2])
    dh, dw = (int(d) for d in a.get("dilations", [1, 1]))
    kh, kw = w.shape[2:]

    def valid(n_out, n_in, s, p, d, k, transposed):
        # count, per kernel tap, the output positions whose input position is inside the input
        o = np.arange(n_out)[:, None]
        t = np.arange(k)[None, :] * d
        if transposed:  # output = i*s - p + t  ->  i = (o + p - t) / s
            num = o + p - t
            return (num % s == 0) & (num // s >= 0) & (num // s < n_in)
        i = o * s - p + t
        return (i >= 0) & (i < n_in)

    tr = layer.op == "deconv"
    vy = valid(layer.shape[1], in_shape[1], sh, pt, dh, kh, tr)  # (OH, kh)
    vx = valid(layer.shape[2], in_shape[2], sw, pl, dw, kw, tr)  # (OW, kw)
    if tr:  # weight (C_in, C_out/g, kh, kw): taps of output channel og in group g come from C_in/g inputs
        group = int(a.get("group", 1))
        nzw = (w != 0).reshape(group, w.shape[0] // group, w.shape[1], kh, kw).sum(axis=1)
        nzw = nzw.reshape(-1, kh, kw)  # (C_out, kh, kw): inputs per tap
    else:
        nzw = (w != 0).sum(axis=1)  # (C_out, kh, kw)
    # synapses = sum_o sum_(y, x) sum_(i, j) nzw[o, i, j] * vy[y, i] * vx[x, j]
    per_tap = vy.sum(axis=0)[:, None] * vx.sum(axis=0)[None, :]  # positions where tap (i, j) is valid
    total = int((nzw * per_tap[None]).sum())
    fan = np.einsum("oij,yi,xj->oyx", nzw, vy.astype(np.int64), vx.astype(np.int64))
    return total, int(fan.max(initial=0))


def _cores(layer: Layer, neurons: int, fan_in: int, bits: int) -> tuple[int, str]:
    bytes_per_neuron = max(1, math.ceil(fan_in * bits / 8))
    if bytes_per_neuron > SYNAPTIC_BYTES_PER_CORE:
        return math.ceil(bytes_per_neuron / SYNAPTIC_BYTES_PER_CORE) * neurons, "fan-in exceeds one core's memory"
    if layer.op == "dense":
        per_core = min(NEURONS_PER_CORE, SYNAPTIC_BYTES_PER_CORE // bytes_per_neuron)
        return math.ceil(neurons / per_core), ""
    c, positions = layer.shape[0], int(np.prod(layer.shape[1:]))
    kernel_bytes = max(1, math.ceil(int(np.prod(layer.weight.shape[1:])) * bits / 8))
    ch = max(1, min(c, SYNAPTIC_BYTES_PER_CORE // kernel_bytes, NEURONS_PER_CORE))
    pos = max(1, min(positions, NEURONS_PER_CORE // ch))
    return math.ceil(c / ch) * math.ceil(positions / pos), ""


def fit(net: Network, weight_bits: int = MAX_WEIGHT_BITS) -> Fit:
    """Per-layer resources and the core / chip estimate for `weight_bits`-bit weights (Loihi 2: at most 8)."""
    shapes = {l.name: l.shape for l in net.layers}
    rows: list[LayerFit] = []
    result = Fit(rows, weight_bits)
    if weight_bits > MAX_WEIGHT_BITS:
        result.problems.append(f"{weight_bits}-bit weights: Loihi 2 synapses hold at most {MAX_WEIGHT_BITS} bits "
                               "(compile or quantize with weight_bits=8)")
    spikes_in = {l.name: l.op != "input" and l.neuron is not None for l in net.layers}
    # bits of what a spiking layer sends: 1 (binary or +-1 spikes), or a graded layer's signed payload width
    msg_bits = {l.name: _payload_bits(l.neuron) if l.neuron is not None and l.neuron.graded else 1
                for l in net.layers}
    for layer in net.layers:
        if layer.op in ("concat", "pad", "maxpool"):
            spikes_in[layer.name] = all(spikes_in[s] for s in layer.inputs)
            msg_bits[layer.name] = max(msg_bits[s] for s in layer.inputs)
        if layer.op == "maxpool":  # a programmable (microcode) neuron per output: window counts and their max
            neurons = int(np.prod(layer.shape))
            fan = int(np.prod(layer.attrs["kernel_shape"]))
            rows.append(LayerFit(layer.name, layer.op, neurons, neurons * fan, fan, 1, 0,
                                 math.ceil(neurons / NEURONS_PER_CORE),
                                 f"count max-pool: programmable neuron, {fan + 1} state variables each"))
            continue
        if layer.op not in ("conv", "deconv", "dense"):
            continue
        neurons = int(np.prod(layer.shape))
        syn, fan = _explicit_synapses(layer, shapes[layer.inputs[0]])
        cores, note = _cores(layer, neurons, fan, weight_bits)
        in_bits = msg_bits[layer.inputs[0]] if spikes_in[layer.inputs[0]] else 9  # spikes, or 8-bit pixels (+ sign)
        acc = (weight_bits - 1) + in_bits + max(1, math.ceil(math.log2(max(2, fan)))) + 1
        if acc > ACCUMULATOR_BITS:
            note = (note + "; " if note else "") + f"|z| may need {acc} bits > {ACCUMULATOR_BITS}-bit accumulator"
        memory = layer.neuron is not None and layer.neuron.memory
        if memory:
            what = "signed memory" if layer.neuron.kind == "SignedIF" else "memory IF"
            note = (note + "; " if note else "") + f"{what}: +1 state (count)"
            if layer.neuron.graded:
                note += f"; graded spikes ({_payload_bits(layer.neuron)}-bit signed payloads)"
        rows.append(LayerFit(layer.name, layer.op, neurons, syn, fan, weight_bits, acc, cores, note, memory))
    result.cores = sum(r.cores for r in rows)
    result.neurons = sum(r.neurons for r in rows)
    result.synapses = sum(r.synapses for r in rows)
    result.memory_neurons = sum(r.neurons for r in rows if r.memory)
    result.chips = max(1, math.ceil(result.cores / CORES_PER_CHIP), math.ceil(result.neurons / NEURONS_PER_CHIP))
    return result


def _payload_bits(n) -> int:
    """Signed width of a graded neuron's payloads, 2**GRADED_BITS and round(alpha theta_n / theta 2**GRADED_BITS)."""
    top = max(2 ** GRADED_BITS, float(np.max(n.neg_payload / n.threshold)) * 2 ** GRADED_BITS)
    return math.ceil(math.log2(top + 1)) + 1


def fit_report(net: Network, weight_bits: int = MAX_WEIGHT_BITS) -> str:
    """A table per layer and a verdict: fits on one Loihi 2 chip or not, and why."""
    f = fit(net, weight_bits)
    head = f"{'layer':<24}{'op':<8}{'neurons':>11}{'synapses':>14}{'fan-in':>8}{'w bits':>7}{'acc bits':>9}{'cores':>7}"
    lines = [f"Loihi 2 fit estimate ({weight_bits}-bit weights; limits per chip: {CORES_PER_CHIP} cores, "
             f"{NEURONS_PER_CORE} neurons and {SYNAPTIC_BYTES_PER_CORE // 1024} KB synaptic memory per core, "
             f"{SYNAPSES_PER_CHIP / 1e6:.0f} M synapses)", head, "-" * len(head)]
    for r in f.layers:
        lines.append(f"{r.name[:23]:<24}{r.op:<8}{r.neurons:>11,}{r.synapses:>14,}{r.fan_in:>8}{r.weight_bits:>7}"
                     f"{r.acc_bits:>9}{r.cores:>7}" + (f"  {r.note}" if r.note else ""))
    lines.append("-" * len(head))
    lines.append(f"{'total':<32}{f.neurons:>11,}{f.synapses:>14,}{'':>24}{f.cores:>7}")
    why = []
    if f.cores > CORES_PER_CHIP:
        why.append(f"{f.cores} cores > {CORES_PER_CHIP}")
    if f.neurons > NEURONS_PER_CHIP:
        why.append(f"{f.neurons:,} neurons > {NEURONS_PER_CHIP:,}")
    if f.synapses > SYNAPSES_PER_CHIP:
        lines.append(f"note: {f.synapses:,} explicit synapses > {SYNAPSES_PER_CHIP:,}: the estimate relies on "
                     "Loihi 2's convolutional weight sharing")
    graded = [r.name for r in f.layers if "graded spikes" in r.note]
    if graded:
        lines.append(f"note: {len(graded)} layers (--leaky graded) send graded spikes: integer payloads of "
                     f"2**{GRADED_BITS} (+1) and round(alpha theta_n / theta 2**{GRADED_BITS}) (-1), Loihi 2's graded "
                     "spikes (up to 24 bits); the acc bits column counts them in their consumers' sums")
    if f.memory_neurons:
        lines.append(f"note: {f.memory_neurons:,} memory IF neurons keep one more state variable each than an IF "
                     "neuron (the count of +1 minus -1 spikes: log2(T) + 1 bits, 9 at T = 256) and send signed "
                     "(graded) spikes; the estimate assumes 8,192 of them still fit a core")
    why += f.problems
    if f.fits:
        lines.append(f"fits on one Loihi 2 chip: {f.cores} of {CORES_PER_CHIP} cores (estimate)")
    else:
        lines.append(f"does NOT fit on one Loihi 2 chip ({'; '.join(why)}): about {f.chips} chips (estimate)")
    return "\n".join(lines)
