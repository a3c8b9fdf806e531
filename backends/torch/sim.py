"""The torch simulator: layer by layer over a chunk of time steps, the NumPy reference's walk on torch tensors.

Semantics: docs/neurons.md. The network has no synaptic delay, so it is feed-forward in time: for a chunk of steps
[t0, t1) each layer in topological order gets all the chunk's steps of its sources at once, computes its synaptic
input z for all of them as ONE batched convolution over (steps x batch) samples (time-major), and only the neuron
update walks through time, element-wise over all the layer's neurons (on a GPU: one kernel per operation over
B x N values). Membranes, emitted counts (memory IF), output sums and spike counts carry over from chunk to chunk,
so memory is bounded by `max_bytes` whatever T is. A value that is the same at every step (the image under direct
encoding, its padding, the first convolution's z) is computed once per call.

Float mode reproduces `snnc.backends.numpy.sim` operation for operation: the source's threshold folded into the
consumer's weights in float64 then rounded to float32, int8 spikes cast to float32, float32 membranes with the
neuron update of `snnc.backends.numpy.scan` in the same order, float64 output sums. Only the convolutions sum in
another order (torch's kernels, not onnxruntime's), so results agree to float32 rounding while no spike flips.

Fixed point runs the integers of `snnc.ir.fixedpoint.quantize` in the order the NumPy simulator's docstring gives,
bit for bit: z = conv(in_int, w_int) + b_int in int64, int64 membranes, the same decoding in numpy float64. The
integer convolutions run in float32 where the layer's bound (max over outputs of sum |w_int| x the largest input
integer, `ops.abs_sum_bound`) is below 2**24, so every partial sum is exact whatever the summation order; above
it, on the CPU, as the NumPy simulator's exact float32 pieces (`ops.exact_parts`, added in int64), or in float64
(exact below 2**53) where no split works; on CUDA always in float64, where cuDNN may pick transform-based
algorithms (Winograd, FFT) whose rounding error the final round-to-integer removes only with float64's margin. TF32 is off
during a simulation: its 10-bit mantissa would break both modes.
"""

from __future__ import annotations

import contextlib
import time
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Iterator

import numpy as np
import torch
import torch.nn.functional as F

from snnc.backends import SimResult, lru_cached, rate_spikes
from snnc.backends.numpy.ops import abs_sum_bound, exact_parts
from snnc.backends.numpy.sim import (DEFAULT_MAX_BYTES, _chunks, _fingerprint, _input_scale,
                                     _inputs_by_layer, _per_neuron, _to_input_values, _with_overrides,
                                     default_threads)
from snnc.ir import fixedpoint
from snnc.ir.errors import SnncError
from snnc.ir.network import Layer, Network
from snnc.ir.options import SimOptions

FLOAT64_EXACT = 2**53
# Neuron values per scan tile on the CPU: 64k float32 membranes (256 KiB) stay in L2 across a chunk's steps, as in
# the NumPy simulator (measured here: 48-56 ns against 57-132 ns per neuron-step untiled, on a loaded machine).
TILE_VALUES = 65536
POOL_TILE_VALUES = 131072  # float64 running sums per count max-pool block (1 MiB)


def resolve_device(name: str) -> torch.device:
    """torch.device for --device; SnncError when it is malformed or no such GPU exists here."""
    try:
        dev = torch.device(name)
    except (RuntimeError, ValueError):
        raise SnncError(f"--device {name!r}: expected cpu, cuda or cuda:N") from None
    if dev.type == "cpu":
        return dev
    if dev.type != "cuda":
        raise SnncError(f"--device {name!r}: expected cpu, cuda or cuda:N")
    if not torch.cuda.is_available():
        build = "a CPU-only build" if torch.version.cuda is None else f"CUDA {torch.version.cuda}"
        raise SnncError(f"--device {name}: torch {torch.__version__} ({build}) finds no CUDA GPU here; "
                        "use --device cpu")
    index = 0 if dev.index is None else dev.index
    if index >= torch.cuda.device_count():
        raise SnncError(f"--device {name}: only {torch.cuda.device_count()} CUDA device(s) here")
    return torch.device("cuda", index)


@contextlib.contextmanager
def _torch_settings(threads: int | None) -> Iterator[None]:
    """Full float32 precision (no TF32) and the thread count for one simulation; restored afterwards."""
    old = (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32, torch.get_num_threads())
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = old[:2]
        torch.set_num_threads(old[2])


# ---- the plan --------------------------------------------------------------------------------------------------

@dataclass
class _LayerPlan:
    layer: Layer
    n: int  # values per sample
    const: bool  # the same value at every step
    spikes: bool  # outputs are int8 spikes in {-1, 0, 1}
    unit: np.ndarray  # (C,) float64: real value of one unit of the output
    out_max: int = 0  # fixed point: bound on |output integer|
    weight: torch.Tensor | None = None  # synaptic layers: float32 folded weights or w_int in the compute dtype
    bias: torch.Tensor | None = None  # float32 bias or int64 b_int, shaped to broadcast over z
    cdtype: torch.dtype = torch.float32  # dtype of the convolution
    parts: list | None = None  # fixed point on the CPU: [(shift, input slice, float32 weight piece)] (exact_parts)
    theta: torch.Tensor | None = None  # (N,) per neuron, the membrane's dtype
    theta_neg: torch.Tensor | None = None  # (N,) SignedIF
    v0: torch.Tensor | None = None  # (N,)
    memory: bool = False
    last_use: int = -1
    payload_neg: torch.Tensor | None = None  # (N,) graded neurons: a negative-side spike's magnitude (numpy/graded.py)
    payload_pos: float = 1.0
    neg_level: torch.Tensor | None = None  # (N,) graded neurons: the negative side's level r (numpy/scan.py)


def _build_plan(net: Network, fixed: bool, encoding: str, input_max: int, weight_bits: int,
                device: torch.device) -> list[_LayerPlan]:
    q = fixedpoint.quantize(net, weight_bits) if fixed else None
    vdtype = torch.int64 if fixed else torch.float32
    plans: dict[str, _LayerPlan] = {}
    order: list[_LayerPlan] = []

    def per_neuron(values: np.ndarray, shape: tuple[int, ...], dtype: Any) -> torch.Tensor:
        return torch.from_numpy(_per_neuron(values, shape, dtype)).to(device)

    for idx, layer in enumerate(net.layers):
        shape, n, c = layer.shape, int(np.prod(layer.shape)), layer.shape[0]
        srcs = [plans[s] for s in layer.inputs]
        for s in srcs:
            s.last_use = idx
        if layer.op == "input":
            if encoding == "rate":
                lp = _LayerPlan(layer, n, False, True, np.ones(c), out_max=1)
            else:
                unit = q[layer.name].out_unit.astype(np.float64) if fixed else np.ones(c)
                lp = _LayerPlan(layer, n, encoding == "direct", False, unit, out_max=int(input_max))
        elif layer.op == "maxpool":  # routing, as in the NumPy simulator
            src = srcs[0]
            lp = _LayerPlan(layer, n, src.const, src.spikes, src.unit, out_max=src.out_max)
        elif layer.op in ("pad", "concat"):
            if layer.op == "pad":
                if len(shape) != 3:
                    raise SnncError(f"layer {layer.name}: pad needs (C, H, W) values, got shape {shape}")
                if layer.attrs.get("mode", "constant") not in ("constant", "edge"):
                    raise SnncError(f"layer {layer.name}: pad mode {layer.attrs.get('mode')!r}; only 'constant' "
                                    "(0) and 'edge' are supported")
            lp = _LayerPlan(layer, n, all(s.const for s in srcs), all(s.spikes for s in srcs),
                            np.concatenate([s.unit for s in srcs]), out_max=max(s.out_max for s in srcs))
        else:
            src = srcs[0]
            nrn = layer.neuron
            bshape = (1, c, 1, 1) if len(shape) == 3 else (1, c)
            if fixed:
                ql = q[layer.name]
                bound = abs_sum_bound(layer, ql.w_int) * max(1, src.out_max)
                if bound >= FLOAT64_EXACT:
                    raise SnncError(f"layer {layer.name}: integer sums up to {bound} are beyond float64's exact "
                                    "range; use float mode")
                cdtype = torch.float32 if bound < fixedpoint.FLOAT32_EXACT and device.type == "cpu" else torch.float64
                parts = None
                if device.type == "cpu" and cdtype == torch.float64:
                    try:  # float32 pieces that are each exact: 2-3x faster than float64 convolutions on a CPU
                        parts = [(shift, sl, torch.from_numpy(p.astype(np.float32)))
                                 for shift, sl, p in exact_parts(layer, ql.w_int, max(1, src.out_max))]
                    except SnncError:  # no split keeps float32 exact: float64 (exact below 2**53)
                        parts = None
                weight = torch.from_numpy(ql.w_int.astype(np.float64)).to(device, cdtype)
                bias = torch.from_numpy(ql.b_int.astype(np.int64).reshape(bshape)).to(device)
                lp = _LayerPlan(layer, n, src.const and nrn is None, nrn is not None,
                                ql.out_unit.astype(np.float64), weight=weight, bias=bias, cdtype=cdtype,
                                out_max=1 if nrn is not None else bound + int(np.abs(ql.b_int).max(initial=0)),
                                parts=parts)
                if nrn is not None:
                    lp.theta = per_neuron(ql.theta_int, shape, np.int64)
                    lp.v0 = per_neuron(ql.v0_int, shape, np.int64)
                    if ql.theta_neg_int is not None:
                        lp.theta_neg = per_neuron(ql.theta_neg_int, shape, np.int64)
                    if ql.payload_neg is not None:  # graded: integer payloads, exact in float64
                        lp.spikes, lp.out_max = False, int(max(ql.payload_pos, ql.payload_neg.max()))
                        lp.payload_neg = per_neuron(ql.payload_neg, shape, np.float64)
                        lp.payload_pos = float(ql.payload_pos)
                        lp.neg_level = per_neuron(ql.neg_level_int, shape, np.int64)
            else:
                w = fixedpoint.fold_units(layer, layer.weight, src.unit).astype(np.float32)
                bias = None if layer.bias is None else torch.from_numpy(
                    np.asarray(layer.bias, np.float32).reshape(bshape)).to(device)
                unit = np.ones(c) if nrn is None else (nrn.threshold * np.ones(c, np.float32)).astype(np.float64)
                lp = _LayerPlan(layer, n, src.const and nrn is None, nrn is not None, unit,
                                weight=torch.from_numpy(w).to(device), bias=bias)
                if nrn is not None:
                    theta = nrn.threshold.astype(np.float32) * np.ones(c, np.float32)
                    lp.theta = per_neuron(theta, shape, np.float32)
                    lp.v0 = per_neuron((float(nrn.v_init) * theta.astype(np.float64)).astype(np.float32), shape,
                                       np.float32)
                    if nrn.kind == "SignedIF":
                        lp.theta_neg = per_neuron(nrn.neg_threshold * np.ones(c, np.float32), shape, np.float32)
                    if nrn.graded:  # a negative-side spike is worth alpha theta_n / theta units of theta
                        lp.spikes = False
                        lp.payload_neg = per_neuron((nrn.neg_payload * np.ones(c, np.float32) / theta)
                                                    .astype(np.float32), shape, np.float32)
                        lp.neg_level = per_neuron(nrn.neg_level * np.ones(c, np.float32), shape, np.float32)
            if nrn is not None:
                lp.memory = bool(nrn.memory)
                lp.v0 = lp.v0.to(vdtype)
        plans[layer.name] = lp
        order.append(lp)
    return order


_PLAN_CACHE: "OrderedDict[tuple, list[_LayerPlan]]" = OrderedDict()
_PLAN_CACHE_SIZE = 4  # plans hold the weights on the device: a few networks at most


def _plan(net: Network, fixed: bool, encoding: str, input_max: int, weight_bits: int,
          device: torch.device) -> list[_LayerPlan]:
    """The plan of this network content and these settings, built once (folding and quantizing the weights of
    yolov3-tiny took seconds per call)."""
    key = (_fingerprint(net), fixed, encoding, int(input_max), int(weight_bits), str(device))
    return lru_cached(_PLAN_CACHE, key, lambda: _build_plan(net, fixed, encoding, input_max, weight_bits, device),
                      _PLAN_CACHE_SIZE)


def clear_cache() -> None:
    """Forget the cached plans (and the device copies of their weights)."""
    _PLAN_CACHE.clear()


# ---- operations ------------------------------------------------------------------------------------------------

def _synapses(lp: _LayerPlan, x: torch.Tensor, fixed: bool) -> torch.Tensor:
    """z for a batch of samples x (S, *input shape): float32, or int64 in fixed point (bias included)."""
    layer = lp.layer
    if fixed and lp.parts is not None:
        # exact float32 pieces (ops.exact_parts): input-channel ranges or base-2**k weight digits, added in int64
        total = None
        flat = x.reshape(x.shape[0], -1) if layer.op == "dense" else x
        for shift, sl, w in lp.parts:
            part = _linear(layer, (flat if sl is None else flat[:, sl]).to(torch.float32), w).to(torch.int64)
            if shift:
                part <<= shift
            total = part if total is None else total.add_(part)
        return total + lp.bias
    y = _linear(layer, x.to(lp.cdtype), lp.weight)
    if fixed:
        if lp.cdtype == torch.float64 and y.device.type != "cpu":
            y = torch.round(y)
        return y.to(torch.int64) + lp.bias
    if lp.bias is not None:
        y = y + lp.bias
    return y.contiguous()


def _linear(layer: Layer, xf: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """conv / conv_transpose / dense of xf with weight w (ONNX attributes and layouts), no bias."""
    a = layer.attrs
    if layer.op == "dense":
        y = xf.reshape(xf.shape[0], -1) @ w.T
    else:
        top, left, bottom, right = (int(p) for p in a.get("pads", [0, 0, 0, 0]))
        stride = tuple(int(s) for s in a.get("strides", [1, 1]))
        dil = tuple(int(d) for d in a.get("dilations", [1, 1]))
        group = int(a.get("group", 1))
        if layer.op == "conv":
            if top or left or bottom or right:
                xf = F.pad(xf, (left, right, top, bottom))
            y = F.conv2d(xf, w, None, stride, 0, dil, group)
        else:
            # ONNX ConvTranspose: the full transposed convolution, output_padding rows/columns at the end (they
            # receive no taps), then `pads` cropped from each side.
            y = F.conv_transpose2d(xf, w, None, stride, 0, 0, group, dil)
            oh, ow = (int(p) for p in a.get("output_padding", [0, 0]))
            if oh or ow:
                y = F.pad(y, (0, ow, 0, oh))
            y = y[:, :, top:y.shape[2] - bottom, left:y.shape[3] - right]
    if tuple(y.shape[1:]) != tuple(layer.shape):
        raise SnncError(f"layer {layer.name}: {layer.op} gives per-sample shape {tuple(y.shape[1:])}, the network "
                        f"says {tuple(layer.shape)}; the layer attributes (pads, output_padding) are inconsistent")
    return y


def _pad(x: torch.Tensor, layer: Layer) -> torch.Tensor:
    top, left, bottom, right = (int(p) for p in layer.attrs.get("pads", [0, 0, 0, 0]))
    h, w = x.shape[2], x.shape[3]
    if layer.attrs.get("mode", "constant") == "edge":
        ih = torch.arange(-top, h + bottom, device=x.device).clamp_(0, h - 1)
        iw = torch.arange(-left, w + right, device=x.device).clamp_(0, w - 1)
        return x.index_select(2, ih).index_select(3, iw)
    out = x.new_zeros((x.shape[0], x.shape[1], h + top + bottom, w + left + right))
    out[:, :, top:top + h, left:left + w] = x
    return out


def _count_maxpool(x: torch.Tensor, layer: Layer, const: bool, tc: int, batch: int,
                   state: dict[str, tuple[torch.Tensor, torch.Tensor]]) -> torch.Tensor:
    """The spike-count max-pool (snnc.ir.countpool): out(t) = M(t) - M(t-1), M = window max of running sums.
    Sums in float64: exact for the integers of spikes and fixed point (below 2**53).

    The running sums S and maxima M persist from chunk to chunk (state). One block of channels at a time
    goes through all of the chunk's steps (on the CPU about POOL_TILE_VALUES sums per block, so S and M stay in
    cache while x streams through once; as whole-chunk passes, running sums, window max and difference took
    as long as the convolutions of the lean graph's step)."""
    k, st = layer.attrs["kernel_shape"], layer.attrs["strides"]
    if const:  # a constant input: out(t) = max every step
        return F.max_pool2d(x.to(torch.float64), k, st).to(x.dtype)
    c_in, h, w = x.shape[1:]
    if layer.name not in state:
        state[layer.name] = (torch.zeros((batch, c_in, h, w), dtype=torch.float64, device=x.device),
                             torch.zeros((batch,) + tuple(layer.shape), dtype=torch.float64, device=x.device))
    sums, maxima = state[layer.name]
    x5 = x.reshape((tc, batch, c_in, h, w))
    out = torch.empty((tc, batch) + tuple(layer.shape), dtype=x.dtype, device=x.device)
    block = c_in if x.device.type != "cpu" else max(1, POOL_TILE_VALUES // (batch * h * w))
    for c0 in range(0, c_in, block):
        cb = slice(c0, min(c_in, c0 + block))
        s_b, m_b = sums[:, cb], maxima[:, cb]
        for t in range(tc):
            s_b += x5[t, :, cb]
            m = F.max_pool2d(s_b, k, st)
            out[t, :, cb] = m - m_b  # integers (spikes, fixed point) are exact in float64 and in x's dtype
            m_b.copy_(m)
    return out.reshape((tc * batch,) + tuple(layer.shape))


def _scan(lp: _LayerPlan, V: torch.Tensor, z: torch.Tensor, z_const: bool, steps: int,
          count: torch.Tensor | None, graded: torch.Tensor | None = None,
          pool: ThreadPoolExecutor | None = None) -> torch.Tensor:
    """The neuron update of `snnc.backends.numpy.scan`, step after step on all (B, N) neurons: spikes (steps, B, N).
    A graded layer also writes the values its spikes carry into `graded` (steps, B, N) while the tile is in
    cache (`snnc.backends.numpy.graded`'s rule; as a separate pass over the chunk it was the largest cost of the
    lean graph's step).

    Masked updates are written as V -= where(mask, theta, 0): subtracting 0 leaves V unchanged exactly, as
    numpy's `where=` does (one kernel; theta * mask first converted the bool mask, a copy and a multiply). On
    the CPU the neurons go in tiles of about TILE_VALUES values, all steps of a tile before
    the next, so a tile's membrane stays in cache (as the NumPy simulator does), and the tiles are shared out
    over `pool`'s threads (torch releases the GIL inside each operation); a GPU takes the whole layer."""
    spikes = torch.empty((steps,) + tuple(V.shape), dtype=torch.int8, device=V.device)
    n = V.shape[1]
    cpu = V.device.type == "cpu"
    width = n if not cpu else max(1024, TILE_VALUES // max(1, V.shape[0]))
    payload_pos = None if graded is None else torch.tensor(lp.payload_pos, dtype=graded.dtype, device=V.device)

    def tile(a: int) -> None:
        b = min(n, a + width)
        with torch.inference_mode():  # thread-local: a pool thread must enter it too
            _scan_tile(V[:, a:b], z[..., a:b], z_const, spikes[:, :, a:b], lp.theta[a:b],
                       None if lp.theta_neg is None else lp.theta_neg[a:b],
                       None if count is None else count[:, a:b],
                       None if graded is None else (graded[:, :, a:b], payload_pos, lp.payload_neg[a:b],
                                                    lp.neg_level[a:b]))

    with _one_thread(cpu):
        if pool is not None and cpu and n > width:
            list(pool.map(tile, range(0, n, width)))
        else:
            for a in range(0, n, width):
                tile(a)
    return spikes


@contextlib.contextmanager
def _one_thread(on: bool) -> Iterator[None]:
    """The scan's element-wise operations one thread per tile (the calling thread, or each pool thread with its
    own tiles), never one operation split over threads. A tile's operation is a few tens of
    microseconds of work: split over threads, each one waits for the slowest, and on a busy machine a thread
    that lost its core costs a scheduler time slice (measured on yolov3-tiny at 416 x 416 with the two cores
    shared: 4 ms per operation with 2 threads); the convolutions keep all threads."""
    if not on or torch.get_num_threads() == 1:
        yield
        return
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def _scan_tile(v: torch.Tensor, z: torch.Tensor, z_const: bool, spikes: torch.Tensor, theta: torch.Tensor,
               theta_neg: torch.Tensor | None, count: torch.Tensor | None,
               graded: tuple[torch.Tensor, ...] | None = None) -> None:
    minus_neg = None if theta_neg is None else -theta_neg
    level = None  # graded: the negative side counts from r (numpy/scan.py), dn at V <= r - theta_neg, not after up
    if graded is not None and theta_neg is not None and count is not None:
        level = graded[3]
        minus_neg = level - theta_neg
    for t in range(spikes.shape[0]):
        v += z if z_const else z[t]
        if theta_neg is not None and count is not None:  # signed memory neuron: the NumPy scan's order
            pos = (v >= theta) & (count >= 0)
            v -= torch.where(pos, theta, 0)
            back = (v < 0) & (count > 0)
            v += torch.where(back, theta, 0)
            neg = (v <= minus_neg) & (count <= 0)
            if level is not None:
                neg &= ~pos
            v += torch.where(neg, theta_neg, 0)
            back_dn = (v > (0 if level is None else level)) & (count < 0)
            v -= torch.where(back_dn, theta_neg, 0)
            s = spikes[t]
            torch.sub((pos | back_dn).view(torch.int8), (neg | back).view(torch.int8), out=s)
            count += s
            if graded is not None:  # dn and back_dn move the count on its negative side: they carry payload_neg
                values, payload_pos, payload_neg = graded[:3]
                torch.where(neg | back_dn, payload_neg, payload_pos, out=values[t]).mul_(s)
            continue
        pos = v >= theta
        v -= torch.where(pos, theta, 0)
        if theta_neg is not None:
            neg = v <= minus_neg
            v += torch.where(neg, theta_neg, 0)
        elif count is not None:
            neg = (v < 0) & (count > 0)
            v += torch.where(neg, theta, 0)
        else:
            spikes[t] = pos
            continue
        s = spikes[t]
        torch.sub(pos.view(torch.int8), neg.view(torch.int8), out=s)  # bool -> int8 views, no copies
        if count is not None:
            count += s


def _bytes_per_step(plans: list[_LayerPlan], batch: int, fixed: bool) -> int:
    """Device bytes one step of a chunk needs: every non-constant layer's outputs (kept until their last reader)
    plus the largest layer's temporaries (its input cast to the convolution dtype, z, the int64 z in fixed point).
    A count max-pool's float64 sums and maxima are state, the same for any chunk length."""
    by = {lp.layer.name: lp for lp in plans}
    live = sum(lp.n * (1 if lp.spikes else (8 if fixed else 4)) for lp in plans if not lp.const)
    transient = 0
    for lp in plans:
        if lp.const or lp.weight is None:
            continue
        size = lp.cdtype.itemsize
        transient = max(transient, size * by[lp.layer.inputs[0]].n + size * lp.n + (8 * lp.n if fixed else 0))
    return max(1, batch * (live + transient))


# ---- the simulation --------------------------------------------------------------------------------------------

def simulate(net: Network, x: Any, ts: list[int], options: SimOptions) -> SimResult:
    """Simulate `net` on a batch x for max(ts) steps, decoding at every checkpoint in ts (sorted)."""
    o = options
    started = time.perf_counter()
    t_max = ts[-1]
    fixed = o.mode == "fixed"
    encoding = o.encoding or str(net.input_encoding.get("kind", "direct"))
    weight_bits = fixedpoint.DEFAULT_WEIGHT_BITS if o.weight_bits is None else int(o.weight_bits)
    device = resolve_device(o.device)
    threads = default_threads() if o.threads is None else int(o.threads)

    net_q = _with_overrides(net, o.v_init, encoding)
    xs = _inputs_by_layer(net, x, encoding)
    if encoding == "explicit":
        short = {k: a.shape[0] for k, a in xs.items() if a.shape[0] < t_max}
        if short:
            raise SnncError(f"explicit input has fewer steps than T={t_max}: {short}")
    batch = next(iter(xs.values())).shape[1 if encoding == "explicit" else 0]
    unit = _input_scale(net_q) if fixed and encoding != "rate" else 1.0
    values: dict[str, Any] = {}
    input_max = 0
    for name, a in xs.items():
        if encoding == "rate":
            values[name] = np.asarray(a)
        else:
            v, peak = _to_input_values(a[:t_max] if encoding == "explicit" else a, fixed, unit, name)
            values[name] = torch.from_numpy(v).to(device, torch.float64 if fixed else torch.float32)
            input_max = max(input_max, peak)
    if fixed and encoding != "rate":
        enc = net_q.input_encoding
        input_max = max(input_max, int(round(float(enc.get("max_value", 1.0)) / float(enc.get("scale", 1.0)))))

    with _torch_settings(None if device.type != "cpu" else threads), torch.inference_mode():
        plans = _plan(net_q, fixed, encoding, input_max, weight_bits, device)
        max_bytes = o.max_bytes or DEFAULT_MAX_BYTES
        steps = int(max(1, min(t_max, max_bytes // _bytes_per_step(plans, batch, fixed))))
        with ThreadPoolExecutor(threads) if device.type == "cpu" and threads > 1 else contextlib.nullcontext() as pool:
            result = _run(net, plans, values, ts, steps, batch, fixed, encoding, o, device, pool)
    result.extra.update({"mode": o.mode, "encoding": encoding, "chunk_steps": steps, "device": str(device),
                         "threads": threads if device.type == "cpu" else None,
                         "seconds": time.perf_counter() - started})
    if fixed:
        result.extra["weight_bits"] = weight_bits
    return result


def _run(net: Network, plans: list[_LayerPlan], values: dict[str, Any], ts: list[int], steps: int, batch: int,
         fixed: bool, encoding: str, o: SimOptions, device: torch.device,
         pool: ThreadPoolExecutor | None = None) -> SimResult:
    from tqdm.auto import tqdm

    t_max = ts[-1]
    by_name = {lp.layer.name: lp for lp in plans}
    outputs = list(net.outputs)
    V = {lp.layer.name: lp.v0.repeat(batch, 1) for lp in plans if lp.theta is not None}
    counts = {name: torch.zeros(batch, dtype=torch.int64, device=device) for name in V}
    emitted = {lp.layer.name: torch.zeros((batch, lp.n), dtype=torch.int32, device=device)
               for lp in plans if lp.memory}
    sums = {name: torch.zeros((batch, by_name[name].n), device=device,
                              dtype=torch.int64 if (fixed or by_name[name].spikes) else torch.float64)
            for name in outputs}
    rng = np.random.default_rng(o.seed) if encoding == "rate" else None
    const_cache: dict[str, torch.Tensor] = {}
    z_cache: dict[str, torch.Tensor] = {}
    pool_state: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}  # maxpool layers: (running sums, maxima)
    result_out: dict[int, dict[str, np.ndarray]] = {}
    raw_sums: dict[int, dict[str, np.ndarray]] = {}
    counts_at: dict[int, dict[str, np.ndarray]] = {}
    chunks = _chunks(ts, steps)
    vdtype = torch.float64 if fixed else torch.float32
    bar = tqdm(total=len(chunks) * len(plans), disable=(None if o.progress is None else not o.progress),
               desc=f"torch {o.mode} T={t_max}", unit="layer", leave=False)
    try:
        for t0, t1 in chunks:
            tc = t1 - t0
            vals: dict[str, torch.Tensor] = {}  # layer -> (B, ...) if const else (tc * B, ...), time-major
            for idx, lp in enumerate(plans):
                layer, name = lp.layer, lp.layer.name
                if lp.const and name in const_cache:
                    data = const_cache[name]
                elif layer.op == "input":
                    data = _input_chunk(lp, values[name], encoding, rng, t0, t1, batch, device)
                elif layer.op == "pad":
                    data = _pad(vals[layer.inputs[0]], layer)
                elif layer.op == "maxpool":
                    data = _count_maxpool(vals[layer.inputs[0]], layer, lp.const, tc, batch, pool_state)
                elif layer.op == "concat":
                    parts = []
                    for s in layer.inputs:
                        d = vals[s]
                        if not lp.const and by_name[s].const:
                            d = d.unsqueeze(0).expand((tc,) + tuple(d.shape)).reshape((tc * batch,) + d.shape[1:])
                        parts.append(d if lp.spikes else d.to(vdtype))
                    data = torch.cat(parts, dim=1)
                else:
                    src_const = by_name[layer.inputs[0]].const
                    if src_const and name in z_cache:
                        z = z_cache[name]
                    else:
                        z = _synapses(lp, vals[layer.inputs[0]], fixed)
                        if src_const:
                            z_cache[name] = z
                    if lp.theta is None:
                        data = z.to(vdtype) if fixed else z  # fixed: float64 holds the integers exactly
                    else:
                        zf = z.reshape((batch, lp.n) if src_const else (tc, batch, lp.n))
                        graded = None if lp.payload_neg is None else torch.empty((tc, batch, lp.n), dtype=vdtype,
                                                                                 device=device)
                        spikes = _scan(lp, V[name], zf, src_const, tc, emitted.get(name), graded, pool)
                        # per sample: a full reduction is ~15x faster than one over dims (0, 2) in torch 2.13
                        counts[name] += torch.stack([torch.count_nonzero(spikes[:, b]) for b in range(batch)])
                        data = (spikes if graded is None else graded).reshape((tc * batch,) + layer.shape)
                    z = zf = None  # free before the next layer
                if lp.const:
                    const_cache[name] = data
                if name in sums:
                    _accumulate(sums[name], data, lp, tc, batch)
                vals[name] = data
                for s in set(layer.inputs):
                    if by_name[s].last_use == idx:
                        vals.pop(s, None)
                if lp.last_use < 0:
                    vals.pop(name, None)
                bar.update(1)
            if t1 in ts:
                result_out[t1] = {}
                for name in outputs:
                    lp = by_name[name]
                    acc = sums[name].cpu().numpy()
                    unit_n = _per_neuron(lp.unit, lp.layer.shape, np.float64)
                    result_out[t1][name] = ((acc.astype(np.float64) * unit_n) / t1).reshape((batch,) + lp.layer.shape)
                    if fixed:
                        raw_sums.setdefault(t1, {})[name] = acc.reshape((batch,) + lp.layer.shape).copy()
                counts_at[t1] = {k: v.cpu().numpy().copy() for k, v in counts.items()}
    finally:
        bar.close()
    extra: dict[str, Any] = {"spike_counts_at": counts_at}
    if fixed:
        extra["sums"] = raw_sums
    neurons = {lp.layer.name: lp.n for lp in plans if lp.theta is not None}
    return SimResult(outputs=result_out, spike_counts=counts_at[t_max], neurons=neurons, steps=t_max, extra=extra)


def _input_chunk(lp: _LayerPlan, x: Any, encoding: str, rng: Any, t0: int, t1: int, batch: int,
                 device: torch.device) -> torch.Tensor:
    shape = tuple(lp.layer.shape)
    if encoding == "direct":
        return x
    if encoding == "explicit":
        return x[t0:t1].reshape(((t1 - t0) * batch,) + shape)
    return torch.from_numpy(rate_spikes(x, rng, t1 - t0).reshape(((t1 - t0) * batch,) + shape)).to(device)


def _accumulate(acc: torch.Tensor, data: torch.Tensor, lp: _LayerPlan, tc: int, batch: int) -> None:
    """Output sums: int64 for spikes and fixed-point integers, float64 for float values (numpy's dtypes)."""
    if lp.const:
        acc += data.reshape(batch, lp.n).to(acc.dtype) * tc
    else:
        acc += data.reshape(tc, batch, lp.n).to(acc.dtype).sum(dim=0)
