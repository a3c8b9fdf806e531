"""The Lava process graph of a Network, as plain data (no lava import): populations, connections, delays.

Every input / conv / deconv / dense layer becomes one population (`PopSpec`: ConstantSource, IF, MemoryIF,
SignedIF or Linear); pad and concat layers become no process at all: they are folded into the connections of their
consumers (`Route`). Each connection (`ConnSpec`) is one of lava-nc's own processes:

    Conv    conv layer, the source reached directly or through concat (a channel slice of the weights, group 1)
            and zero pads, when the total padding is symmetric               (lava.proc.conv, weights (O, kx, ky, I))
    Dense   dense layer                                                      (lava.proc.dense, columns in (W, H, C))
    Sparse  everything else: deconvolution, asymmetric padding, edge pad, concat under groups; the matrix of the
            layer composed with the routing from the source population      (lava.proc.sparse)

Layouts follow Lava: a (C, H, W) layer is a (W, H, C) population, flattened in C order (index x*H*C + y*C + c).
Depth: the input source has depth 0; a population's depth is 1 + the largest depth among its sources (each
connection process delays by one step). A source shallower than that is connected through a Delay process of
the difference, so every population at depth d sees the NumPy reference's step k at Lava step d + k.
A count max-pool (`--maxpool count`) is a CountMaxPool population fed by 0/1 Sparse routes (countpool.py).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp

from snnc.ir import fixedpoint
from snnc.ir.errors import SnncError
from snnc.ir.network import Layer, Network

NEURON_KINDS = ("IF", "MemoryIF", "SignedIF", "SignedMemoryIF", "GradedSignedMemoryIF")  # population kinds with spikes
ACC_BITS = 24  # lava's fixed-point Conv model wraps its output to 24 bits (Loihi's dendritic accumulator)
EXACT_BITS = 53  # float64 (lava's float Dense / Sparse, snnc's float Conv model) sums integers exactly below 2**53
MAX_SPARSE = 50_000_000  # synapses one Sparse process may hold (about 1 GB as csr) before we refuse


@dataclass
class PopSpec:
    name: str
    kind: str  # "source", "IF", "MemoryIF", "SignedIF", "SignedMemoryIF", "Linear"
    shape: tuple[int, ...]  # Lava layout: (W, H, C) or (C,)
    depth: int
    bias: np.ndarray | None = None  # per neuron, Lava layout
    vth: np.ndarray | None = None
    vth_neg: np.ndarray | None = None
    v0: np.ndarray | None = None
    unit: np.ndarray | None = None  # (C,) float64: real value of one unit of this population's output
    max_out: int = 1  # bound on |output| in fixed point (1 for spikes)
    pay_pos: np.ndarray | None = None  # GradedSignedMemoryIF: what a spike sends on each side, per neuron
    pay_neg: np.ndarray | None = None
    neg_level: np.ndarray | None = None  # graded: the negative side's level r (Neuron.neg_level)


@dataclass
class ConnSpec:
    name: str
    target: str
    source: str
    kind: str  # "conv", "dense", "sparse"
    delay: int  # Delay process steps between source and connection (0: none)
    weight: object  # conv: (O, kx, ky, I) array; dense: (O, N) array; sparse: csr matrix
    conv: dict = field(default_factory=dict)  # conv: input_shape, padding, stride, dilation, groups (X, Y order)
    num_message_bits: int = 0
    bound: int = 0  # fixed point: bound on |a_out|
    synapses: int = 0
    constant: bool = False  # fed by the input source alone: the same a_out every step (direct encoding)


@dataclass
class Route:
    """How a routing layer's values come from one population: structured (a channel slice at offset c0 of the
    zero-padded population, pads (top, left, bottom, right)) or a csr matrix R (layer flat x population flat)."""

    pop: str
    c0: int = 0
    pads: tuple[int, int, int, int] = (0, 0, 0, 0)
    matrix: sp.csr_matrix | None = None


@dataclass
class Plan:
    mode: str
    pops: list[PopSpec]
    conns: list[ConnSpec]
    outputs: list[str]
    chw: dict[str, tuple[int, ...]]  # population name -> Network (C, H, W) shape
    weight_bits: int = fixedpoint.DEFAULT_WEIGHT_BITS

    @property
    def max_depth(self) -> int:
        return max(p.depth for p in self.pops)

    def pop(self, name: str) -> PopSpec:
        return next(p for p in self.pops if p.name == name)


# ---- layouts ---------------------------------------------------------------------------------------------------

def lava_shape(shape: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(reversed(shape)) if len(shape) == 3 else tuple(shape)


def to_lava(a: np.ndarray, chw: tuple[int, ...]) -> np.ndarray:
    """(..., C, H, W) -> (..., W, H, C); 1-D layers unchanged."""
    return np.swapaxes(a, -1, -3) if len(chw) == 3 else a


def from_lava(a: np.ndarray, chw: tuple[int, ...]) -> np.ndarray:
    return np.swapaxes(a, -1, -3) if len(chw) == 3 else a


def per_neuron(values: np.ndarray, chw: tuple[int, ...]) -> np.ndarray:
    """(C,) per channel -> per neuron in Lava layout."""
    v = np.asarray(values).reshape(-1)
    return np.ascontiguousarray(np.broadcast_to(v, lava_shape(chw)))


def _flat_index(chw: tuple[int, ...], c, y, x):
    """Flat index of (c, y, x) in the Lava layout of a (C, H, W) layer."""
    C, H = chw[0], chw[1]
    return (np.asarray(x) * H + np.asarray(y)) * C + np.asarray(c)


def _chw_to_lava_perm(chw: tuple[int, ...]) -> np.ndarray:
    """perm[j] = CHW flat index of the value at Lava flat index j."""
    if len(chw) != 3:
        return np.arange(int(np.prod(chw)))
    return np.arange(int(np.prod(chw))).reshape(chw).transpose(2, 1, 0).reshape(-1)


# ---- layer matrices --------------------------------------------------------------------------------------------

def _conv_params(layer: Layer):
    a = layer.attrs
    return ([int(s) for s in a.get("strides", [1, 1])], [int(p) for p in a.get("pads", [0, 0, 0, 0])],
            [int(d) for d in a.get("dilations", [1, 1])], int(a.get("group", 1)))


def layer_matrix(layer: Layer, w: np.ndarray, in_chw: tuple[int, ...]) -> sp.csr_matrix:
    """The connection layer as a matrix (output flat x input flat), both in Lava layout."""
    out_chw = layer.shape
    if layer.op == "dense":
        perm_in = _chw_to_lava_perm(in_chw)
        return sp.csr_matrix(np.asarray(w)[:, perm_in])
    (sh, sw), (pt, pl, _, _), (dh, dw), group = _conv_params(layer)
    rows, cols, vals = [], [], []
    if layer.op == "conv":
        c_out, cin_g, kh, kw = w.shape
        cout_g = c_out // group
        o, ci, oy, ox = np.meshgrid(np.arange(c_out), np.arange(cin_g), np.arange(out_chw[1]),
                                    np.arange(out_chw[2]), indexing="ij")
        c_src = (o // cout_g) * cin_g + ci
        for i in range(kh):
            for j in range(kw):
                iy, ix = oy * sh - pt + i * dh, ox * sw - pl + j * dw
                ok = (iy >= 0) & (iy < in_chw[1]) & (ix >= 0) & (ix < in_chw[2]) & (w[o, ci, i, j] != 0)
                rows.append(_flat_index(out_chw, o[ok], oy[ok], ox[ok]))
                cols.append(_flat_index(in_chw, c_src[ok], iy[ok], ix[ok]))
                vals.append(w[o[ok], ci[ok], i, j])
    else:  # deconv: weight (C_in, C_out/group, kh, kw); y[o, iy*s - p + i*d] += x[c, iy] w[c, og, i]
        c_in, cout_g, kh, kw = w.shape
        cin_g = c_in // group
        c, og, iy, ix = np.meshgrid(np.arange(c_in), np.arange(cout_g), np.arange(in_chw[1]),
                                    np.arange(in_chw[2]), indexing="ij")
        o = (c // cin_g) * cout_g + og
        for i in range(kh):
            for j in range(kw):
                oy, ox = iy * sh - pt + i * dh, ix * sw - pl + j * dw
                ok = (oy >= 0) & (oy < out_chw[1]) & (ox >= 0) & (ox < out_chw[2]) & (w[c, og, i, j] != 0)
                rows.append(_flat_index(out_chw, o[ok], oy[ok], ox[ok]))
                cols.append(_flat_index(in_chw, c[ok], iy[ok], ix[ok]))
                vals.append(w[c[ok], og[ok], i, j])
    n_out, n_in = int(np.prod(out_chw)), int(np.prod(in_chw))
    return sp.csr_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(n_out, n_in))


def _route_matrix(r: Route, pop_chw: tuple[int, ...], layer_chw: tuple[int, ...]) -> sp.csr_matrix:
    if r.matrix is not None:
        return r.matrix
    n_src = int(np.prod(pop_chw))
    if len(pop_chw) != 3:
        rows = r.c0 + np.arange(n_src)
        return sp.csr_matrix((np.ones(n_src), (rows, np.arange(n_src))), shape=(int(np.prod(layer_chw)), n_src))
    c, y, x = np.meshgrid(*[np.arange(d) for d in pop_chw], indexing="ij")
    rows = _flat_index(layer_chw, c + r.c0, y + r.pads[0], x + r.pads[1]).reshape(-1)
    cols = _flat_index(pop_chw, c, y, x).reshape(-1)
    return sp.csr_matrix((np.ones(rows.size), (rows, cols)), shape=(int(np.prod(layer_chw)), n_src))


def _edge_pad_matrix(in_chw: tuple[int, ...], out_chw: tuple[int, ...], pads) -> sp.csr_matrix:
    t, l = pads[0], pads[1]
    c, y, x = np.meshgrid(*[np.arange(d) for d in out_chw], indexing="ij")
    ys, xs = np.clip(y - t, 0, in_chw[1] - 1), np.clip(x - l, 0, in_chw[2] - 1)
    rows = _flat_index(out_chw, c, y, x).reshape(-1)
    cols = _flat_index(in_chw, c, ys, xs).reshape(-1)
    return sp.csr_matrix((np.ones(rows.size), (rows, cols)), shape=(int(np.prod(out_chw)), int(np.prod(in_chw))))


# ---- the plan --------------------------------------------------------------------------------------------------

def message_bits(pop: PopSpec) -> int:
    """Lava's num_message_bits for what the population sends: 0 binary spikes (IF), >0 graded (the sign of a
    SignedIF or MemoryIF spike, integers of the image or of a copy layer). With 0, lava's Conv/Dense/Sparse cast
    to bool, so a -1 spike would arrive as +1."""
    return {"IF": 0, "SignedIF": 2, "MemoryIF": 2, "SignedMemoryIF": 2}.get(pop.kind, ACC_BITS)


def _routes_for(layer: Layer, routes: dict, chw: dict, shapes: dict) -> list[Route]:
    src_routes = [(s, r) for s in layer.inputs for r in routes[s]]
    out = []
    if layer.op == "concat":
        offsets, off = {}, 0
        for s in layer.inputs:
            offsets.setdefault(s, []).append(off)
            off += shapes[s][0]
        seen: dict[str, int] = {}
        for s in layer.inputs:
            o = offsets[s][seen.get(s, 0)]
            seen[s] = seen.get(s, 0) + 1
            for r in routes[s]:
                if r.matrix is None:
                    out.append(Route(r.pop, r.c0 + o, r.pads))
                else:
                    shift = _route_matrix(Route("", o), shapes[s], layer.shape)
                    out.append(Route(r.pop, matrix=(shift @ r.matrix).tocsr()))
        return out
    # pad
    if len(layer.shape) != 3:
        raise SnncError(f"layer {layer.name}: pad needs (C, H, W) values, got shape {layer.shape}")
    pads = tuple(int(p) for p in layer.attrs.get("pads", [0, 0, 0, 0]))
    mode = layer.attrs.get("mode", "constant")
    src_shape = shapes[layer.inputs[0]]
    for _, r in src_routes:
        if mode == "constant" and r.matrix is None:
            out.append(Route(r.pop, r.c0, tuple(a + b for a, b in zip(r.pads, pads))))
        elif mode in ("constant", "edge"):
            m = (_route_matrix(Route("", 0, pads), src_shape, layer.shape) if mode == "constant"
                 else _edge_pad_matrix(src_shape, layer.shape, pads))
            out.append(Route(r.pop, matrix=(m @ _route_matrix(r, chw[r.pop], src_shape)).tocsr()))
        else:
            raise SnncError(f"layer {layer.name}: pad mode {mode!r}; only 'constant' (0) and 'edge' are supported")
    return out


def _conv_fit(layer: Layer, r: Route, pop_chw, in_chw) -> tuple[int, int] | None:
    """(pad_x, pad_y) when this route into a conv layer is one lava Conv (symmetric total padding), else None."""
    if layer.op != "conv" or r.matrix is not None or len(pop_chw) != 3:
        return None
    (sh, sw), (pt, pl, pb, pr), (dh, dw), group = _conv_params(layer)
    if group != 1 and not (r.c0 == 0 and pop_chw[0] == in_chw[0]):
        return None
    top, left = pt + r.pads[0], pl + r.pads[1]
    bottom = pb + in_chw[1] - pop_chw[1] - r.pads[0]
    right = pr + in_chw[2] - pop_chw[2] - r.pads[1]
    if top != bottom or left != right:
        return None
    kh, kw = layer.weight.shape[2:]
    oh = (pop_chw[1] + 2 * top - dh * (kh - 1) - 1) // sh + 1
    ow = (pop_chw[2] + 2 * left - dw * (kw - 1) - 1) // sw + 1
    return (left, top) if (oh, ow) == tuple(layer.shape[1:]) else None


def _synapse_estimate(layer: Layer) -> int:
    if layer.op == "conv":
        return int(np.prod(layer.shape)) * int(np.prod(layer.weight.shape[1:]))
    if layer.op == "deconv":
        return int(np.prod(layer.weight.shape)) * int(np.prod(layer.shape[1:]))
    return int(np.prod(layer.weight.shape))


def make_plan(net: Network, mode: str = "fixed", weight_bits: int | None = None,
              input_max: int | None = None) -> Plan:
    """Plan the process graph of `net` (mode "fixed": the integers of fixedpoint.quantize; "float": float32)."""
    if mode not in ("fixed", "float"):
        raise SnncError(f"mode must be 'fixed' or 'float', got {mode!r}")
    enc = net.input_encoding or {}
    if enc.get("kind", "direct") != "direct":
        raise SnncError(f"the Lava backend supports direct input encoding only, the network uses {enc.get('kind')!r}")
    fixed = mode == "fixed"
    weight_bits = fixedpoint.DEFAULT_WEIGHT_BITS if weight_bits is None else int(weight_bits)
    q = fixedpoint.quantize(net, weight_bits) if fixed else None
    if input_max is None:
        input_max = int(round(float(enc.get("max_value", 1.0)) / float(enc.get("scale", 1.0))))
    shapes = {l.name: l.shape for l in net.layers}
    units: dict[str, np.ndarray] = {}
    routes: dict[str, list[Route]] = {}
    pops: dict[str, PopSpec] = {}
    chw: dict[str, tuple[int, ...]] = {}
    conns: list[ConnSpec] = []
    for layer in net.layers:
        name, c = layer.name, layer.shape[0]
        if layer.op == "input":
            units[name] = q[name].out_unit if fixed else np.ones(c)
            pops[name] = PopSpec(name, "source", lava_shape(layer.shape), 0, unit=units[name],
                                 max_out=int(input_max) if fixed else 0)
            routes[name], chw[name] = [Route(name)], layer.shape
            continue
        if layer.op in ("pad", "concat"):
            routes[name] = _routes_for(layer, routes, chw, shapes)
            units[name] = np.concatenate([units[s] for s in layer.inputs])
            continue
        if layer.op == "maxpool":  # a CountMaxPool population behind routing Sparse connections (countpool.py)
            from snnc.backends.lava.countpool import plan_pool  # here: countpool imports this module

            src = layer.inputs[0]
            pops[name], pool_conns = plan_pool(layer, routes[src], pops, chw, shapes[src], units[src])
            conns += pool_conns
            routes[name], chw[name], units[name] = [Route(name)], layer.shape, units[src]
            continue
        src = layer.inputs[0]
        in_chw = shapes[src]
        if fixed:
            w, bias = q[name].w_int.astype(np.int64), q[name].b_int.astype(np.int64)
        else:
            w = fixedpoint.fold_units(layer, layer.weight, units[src]).astype(np.float32).astype(np.float64)
            bias = np.zeros(c, np.float32) if layer.bias is None else layer.bias.astype(np.float32)
        depth = 1 + max(pops[r.pop].depth for r in routes[src])
        for k, r in enumerate(routes[src]):
            spop, pop_chw = pops[r.pop], chw[r.pop]
            cname = f"{name}.{k}" if len(routes[src]) > 1 else name
            fit = _conv_fit(layer, r, pop_chw, in_chw)
            if fit is not None:
                (sh, sw), _, (dh, dw), group = _conv_params(layer)
                ws = w if group != 1 else w[:, r.c0:r.c0 + pop_chw[0]]
                kind, weight, size = "conv", ws[:, :, ::-1, ::-1].transpose(0, 3, 2, 1), ws[0].size
                row_abs = np.abs(ws).reshape(ws.shape[0], -1).sum(axis=1)
                params = {"input_shape": lava_shape(pop_chw), "padding": fit, "stride": (sw, sh),
                          "dilation": (dw, dh), "groups": group}
                synapses = int(np.prod(layer.shape)) * size
            else:
                if layer.op != "dense" and _synapse_estimate(layer) > MAX_SPARSE:
                    raise SnncError(f"layer {name}: about {_synapse_estimate(layer):,} synapses as one lava Sparse "
                                    f"matrix (limit {MAX_SPARSE:,}); this layer needs symmetric padding and no "
                                    "edge pad to run as a lava Conv")
                m = layer_matrix(layer, w, in_chw)
                if not (r.matrix is None and r.c0 == 0 and r.pads == (0, 0, 0, 0) and pop_chw == in_chw):
                    m = (m @ _route_matrix(r, pop_chw, in_chw)).tocsr()
                m.eliminate_zeros()
                row_abs = np.asarray(abs(m).sum(axis=1)).reshape(-1)
                kind = "dense" if layer.op == "dense" else "sparse"
                weight, params, synapses = (m.toarray() if kind == "dense" else m), {}, int(m.nnz)
            bound = int(row_abs.max(initial=0)) * max(1, spop.max_out)
            if fixed and bound >= 2 ** EXACT_BITS:
                raise SnncError(f"layer {name}: its synaptic sums may reach {bound:.3g}, beyond the 2**53 that "
                                "float64 holds exactly; use fewer weight bits")
            conns.append(ConnSpec(cname, name, r.pop, kind, depth - 1 - spop.depth, weight, params,
                                  message_bits(spop), bound, synapses, constant=spop.kind == "source"))
        n = layer.neuron
        lshape = lava_shape(layer.shape)
        if n is None:
            unit = q[name].out_unit if fixed else np.ones(c)
            bound = max(cn.bound for cn in conns if cn.target == name) + int(np.abs(bias).max(initial=0))
            pops[name] = PopSpec(name, "Linear", lshape, depth, bias=per_neuron(bias, layer.shape), unit=unit,
                                 max_out=bound if fixed else 0)
        else:
            if fixed:
                ql = q[name]
                vth, vneg, v0, unit = ql.theta_int, ql.theta_neg_int, ql.v0_int, ql.out_unit
            else:
                theta = n.threshold.astype(np.float32) * np.ones(c, np.float32)
                vth, unit = theta, theta.astype(np.float64)
                vneg = n.neg_threshold * np.ones(c, np.float32) if n.kind == "SignedIF" else None
                v0 = (float(n.v_init) * theta.astype(np.float64)).astype(np.float32)
            kind = {"IF": "MemoryIF", "SignedIF": "SignedMemoryIF"}[n.kind] if n.memory else n.kind
            pops[name] = PopSpec(name, kind, lshape, depth, bias=per_neuron(bias, layer.shape),
                                 vth=per_neuron(vth, layer.shape),
                                 vth_neg=None if vneg is None else per_neuron(vneg, layer.shape),
                                 v0=per_neuron(v0, layer.shape), unit=unit, max_out=1)
            if n.graded:  # graded spikes (docs/neurons.md): integer payloads in fixed point, ratios to theta in float
                if fixed:
                    pos, neg = np.full(c, ql.payload_pos, np.int64), ql.payload_neg
                    vneg, level = ql.theta_neg_int, ql.neg_level_int
                else:
                    pos = np.ones(c, np.float32)
                    neg = (n.neg_payload * np.ones(c, np.float32) / vth).astype(np.float32)
                    vneg, level = n.neg_threshold * np.ones(c, np.float32), n.neg_level * np.ones(c, np.float32)
                pops[name] = dataclasses.replace(
                    pops[name], kind="GradedSignedMemoryIF", vth_neg=per_neuron(vneg, layer.shape),
                    pay_pos=per_neuron(pos, layer.shape), pay_neg=per_neuron(neg, layer.shape),
                    neg_level=per_neuron(level, layer.shape),
                    max_out=int(max(pos.max(), neg.max())) if fixed else 1)
        routes[name], chw[name], units[name] = [Route(name)], layer.shape, pops[name].unit
    for out in net.outputs:
        if out not in pops or pops[out].kind == "source":
            raise SnncError(f"output {out!r} is a {net.layer(out).op} layer; the Lava backend reads outputs from "
                            "conv, deconv or dense layers only")
    return Plan(mode, list(pops.values()), conns, list(net.outputs), chw, weight_bits)
