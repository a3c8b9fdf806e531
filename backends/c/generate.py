"""C99 code generation for a spiking `Network`: a self-contained project an embedded host can build with `make`.

    generate(net, out_dir, mode="fixed")  ->  out_dir/ snn_model.h  snn_model.c  weights.bin (or weights.h)
                                                        main.c  Makefile

One C function per layer, dimensions baked in as constants. Activations live channels-last (H, W, C) so that the
inner loop of every synaptic update is a contiguous vector over output channels; the API takes and returns
channels-first (C, H, W) like the rest of snnc. Connection layers are event driven: each step the source buffer
is scanned and every nonzero input (a spike, or a pixel) scatters its weight rows into the layer's input
current z, which is what a neuromorphic core does and costs time proportional to the number of spikes. A layer
fed only by the (direct-encoded) input recomputes z only when the input changes, so a constant image costs one
convolution, not T. The neuron update then follows docs/neurons.md:

    fixed:  V += z_int + b_int (int64);  IF: s = V >= theta_int, V -= s*theta_int
            SignedIF: s = +1 where V >= theta_int (V -= theta_int), else -1 where V <= -theta_neg_int
            (V += theta_neg_int); memory IF: as IF, and s = -1 where V < 0 and the neuron's count n of emitted
            spikes (+1s minus -1s, an int32 per neuron) is > 0 (V += theta_int), then n += s;
            signed memory (SignedIF with memory): +1 where V >= theta_int and n >= 0 (V -= theta_int), -1 where
            V < 0 and n > 0 (V += theta_int), -1 where V <= -theta_neg_int and n <= 0 (V += theta_neg_int), +1
            where V > 0 and n < 0 (V -= theta_neg_int), tested in that order on the updated V; n += s;
            the next layer receives s in {-1, 0, 1}; linear layers output z_int + b_int.
    float:  the same in snn_real_t with out = s * theta.

Integers come from `snnc.ir.fixedpoint.quantize` (bit-exact with the NumPy reference); no rounding happens
in C. No memory is allocated after `snn_init`.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from snnc.ir.errors import SnncError
from snnc.ir.fixedpoint import fold_units, is_copy_layer, quantize
from snnc.ir.network import Layer, Network

from snnc.backends.c import runtime

GENERATOR_VERSION = 2
BLOB_MAGIC = b"SNNCWTS1"
BLOB_VERSION = 1
BLOB_ALIGN = 64
MODES = ("fixed", "float")
FLOAT_TYPES = {"float32": ("float", np.float32), "float64": ("double", np.float64)}
_INT_TYPES = [("int8_t", np.int8), ("int16_t", np.int16), ("int32_t", np.int32)]
_INT32_MAX = 2**31 - 1
# input channels a conv gathers at one position before scattering their nonzeros four at a time (measured on
# yolov3-tiny: 16 and 32 alike, 1.2-1.3x faster steps than one scatter per input; 4 was slower)
GATHER_BLOCK = 32
_CTYPE_BYTES = {"int8_t": 1, "int16_t": 2, "int32_t": 4, "int64_t": 8, "float": 4, "double": 8}


def _conv_rows(h_in: int, sh: int, pt: int, dh: int, kh: int) -> str:
    """C declarations of iy_lo, iy_hi: the input rows that reach output rows [r_lo, r_hi) of a conv, whose
    output row of input row iy and tap ky is (iy + pt - ky * dh) / sh."""
    return (f"        const int iy_lo = SNN_MAX(0, r_lo * {sh} - {pt});\n"
            f"        const int iy_hi = SNN_MIN({h_in}, (r_hi - 1) * {sh} - {pt} + {dh * (kh - 1)} + 1);")


@dataclass
class _Param:
    field: str  # ctx member that points at it
    ctype: str
    array: np.ndarray


@dataclass
class Project:
    """A generated C project in memory: file name -> bytes, plus what a host needs to drive it."""

    files: dict[str, bytes]
    mode: str
    input_shape: tuple[int, int, int]
    input_file_dtype: np.dtype  # element type of snn_run's input file
    sum_dtype: np.dtype  # element type of snn_run --raw output sums
    outputs: list[tuple[str, tuple[int, ...]]]  # (layer name, per-sample shape), snn_output_names order
    neuron_layers: list[tuple[str, int]]  # (layer name, neurons per sample), spike count order
    layout_hash: str  # identifies the C code (not the weights); the weight blob carries it too
    out_units: dict[str, np.ndarray] = field(default_factory=dict)  # per output layer, (C,) float64
    weight_bytes: int = 0  # parameters (the blob's arrays)
    state_bytes: int = 0  # what snn_init allocates besides the weights (membranes, activations, sums)

    def write(self, out_dir: Path) -> Path:
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        for name, data in self.files.items():
            (out_dir / name).write_bytes(data)
        return out_dir


def generate(net: Network, out_dir: Path | str, mode: str = "fixed", *, weights: str = "bin",
             weight_bits: int | None = None, float_type: str = "float32", v_init: float | None = None,
             constant_input: bool = True) -> Path:
    """Write the C project for `net` into `out_dir` and return it.

    mode: "fixed" (integers from `quantize(net, weight_bits)`, bit-exact with the NumPy reference; None: quantize's
    default width) or "float".
    weights: "bin" (a `weights.bin` blob read by `snn_init(path)`) or "header" (`weights.h`, compiled in; for
    targets without a file system). float_type: "float32" or "float64", the float-mode arithmetic.
    v_init: override every neuron's initial potential (fraction of theta), as the simulators' option does.
    constant_input: a layer fed by the input image alone keeps its input current z and recomputes it only when
    the image changes (a constant current under direct encoding); False recomputes it every step (the per-step
    path, bit-exact with it in fixed point; for tests and comparisons).
    """
    return render(net, mode, weights=weights, weight_bits=weight_bits, float_type=float_type,
                  v_init=v_init, constant_input=constant_input).write(Path(out_dir))


def render(net: Network, mode: str = "fixed", *, weights: str = "bin", weight_bits: int | None = None,
           float_type: str = "float32", v_init: float | None = None, constant_input: bool = True) -> Project:
    """The generated project in memory (see `generate`)."""
    gen = _Generator(net.with_v_init(v_init), mode, weights, weight_bits, float_type)
    gen.constant_input = bool(constant_input)
    return gen.run()


def _shape3(shape: tuple[int, ...]) -> tuple[int, int, int]:
    if len(shape) == 3:
        return shape  # type: ignore[return-value]
    if len(shape) == 1:
        return (shape[0], 1, 1)
    raise SnncError(f"C backend: layer shape {shape} is neither (C,) nor (C, H, W)")


def _pair(attrs: dict, key: str, default: int) -> tuple[int, int]:
    v = attrs.get(key)
    if v is None:
        return default, default
    v = [int(a) for a in v]
    return (v[0], v[0]) if len(v) == 1 else (v[0], v[1])


def _pads(attrs: dict) -> tuple[int, int, int, int]:
    p = [int(a) for a in attrs.get("pads") or [0, 0, 0, 0]]
    if len(p) != 4:
        raise SnncError(f"C backend: pads must be [top, left, bottom, right], got {p}")
    if min(p) < 0:
        raise SnncError(f"C backend: negative pads {p} are not supported")
    return p[0], p[1], p[2], p[3]


def _abs_sum_bound(lay: Layer, w: np.ndarray) -> int:
    """An upper bound on sum |w| over the synapses reaching one output value (fixed-point accumulator width)."""
    a = np.abs(w)  # w_int is int32 (|w| <= 2**15 at most): abs cannot overflow; the sums run in int64
    if lay.op == "deconv":
        group = int(lay.attrs.get("group", 1))
        c_in, cout_g = a.shape[:2]
        return int(a.reshape(group, c_in // group, cout_g, -1).sum(axis=(1, 3), dtype=np.int64).max(initial=0))
    return int(a.reshape(a.shape[0], -1).sum(axis=1, dtype=np.int64).max(initial=0))


def _c_string(s: str) -> str:
    """A C string literal for `s` (UTF-8 bytes; anything not plain printable ASCII as an octal escape)."""
    out = []
    for byte in s.encode():
        ch = chr(byte)
        out.append(ch if 32 <= byte < 127 and ch not in '"\\?' else f"\\{byte:03o}")
    return '"' + "".join(out) + '"'


def _comment(s: str) -> str:
    return "".join(ch if 32 <= ord(ch) < 127 else "?" for ch in s).replace("*/", "* /").replace("/*", "/ *")


def _c_number(v, ctype: str) -> str:
    if ctype == "float":
        return repr(float(np.float32(v))) + "f" if np.isfinite(v) else "0.0f"
    if ctype == "double":
        return repr(float(v))
    if ctype == "int64_t":
        return f"INT64_C({int(v)})"
    return str(int(v))


class _Generator:
    def __init__(self, net: Network, mode: str, weights: str, weight_bits: int | None, float_type: str):
        if mode not in MODES:
            raise SnncError(f"C backend: mode must be one of {MODES}, got {mode!r}")
        if weights not in ("bin", "header"):
            raise SnncError(f"C backend: weights must be 'bin' or 'header', got {weights!r}")
        if float_type not in FLOAT_TYPES:
            raise SnncError(f"C backend: float_type must be one of {tuple(FLOAT_TYPES)}, got {float_type!r}")
        self.net, self.mode, self.weights = net, mode, weights
        self.constant_input = True  # input-only layers keep z while the image is unchanged (render's option)
        self.fixed = mode == "fixed"
        self.real, self.real_np = FLOAT_TYPES[float_type]
        inputs = net.input_layers
        if len(inputs) != 1:
            raise SnncError(f"C backend: the network needs exactly one input layer, it has {len(inputs)}")
        if not net.outputs:
            raise SnncError("C backend: the network has no outputs")
        self.rate = net.input_encoding.get("kind") == "rate"
        self.q = None
        if self.fixed:
            self.q = quantize(net) if weight_bits is None else quantize(net, weight_bits=weight_bits)
        self.index = {lay.name: i for i, lay in enumerate(net.layers)}
        self.shapes = {lay.name: _shape3(lay.shape) for lay in net.layers}
        for lay in net.layers:
            if int(np.prod(self.shapes[lay.name])) > _INT32_MAX // 8:
                raise SnncError(f"C backend: layer {lay.name} is too large for 32-bit indexing")
        self.params: list[_Param] = []
        self.fields: list[str] = []  # ctx struct members
        self.allocs: list[tuple[str, str, int]] = []  # (field, ctype, count) allocated at init
        self.funcs: list[str] = []
        self.step_calls: list[str] = []
        self.reset_lines: list[str] = []
        self.scratch_elems = 1
        self.scratch32_elems = 0  # int32 partial sums of the fixed-point blocked convs (_conv_weights_outer)
        self._choose_types()
        # fixed point: bound on |output integer| of each layer (1 for spikes), None where unbounded (direct input)
        self.vmax: dict[str, int | None] = {}
        # real value of one unit of each layer's output (C,): spikes carry theta, folded into the consumer's weights
        self.units: dict[str, np.ndarray] = {}
        self.otype: dict[str, str] = {}  # C type of each layer's output buffer
        self.input_only: dict[str, bool] = {}  # output depends on the input image alone (no neuron state)

    # ---- types -----------------------------------------------------------------------------------------
    def _choose_types(self) -> None:
        if self.fixed:
            peak = max((int(np.abs(q.w_int).max(initial=0)) for q in self.q.values() if q.w_int is not None),
                       default=0)
            self.wtype, self.wnp = next((c, t) for c, t in _INT_TYPES if peak <= np.iinfo(t).max)
            self.pixel, self.lin, self.mem, self.bias, self.sum = "int32_t", "int64_t", "int64_t", "int64_t", "int64_t"
            self.input_t = "int32_t"
            self.input_file_t, self.input_file_np = ("double", np.float64) if self.rate else ("int32_t", np.int32)
            self.sum_np = np.int64
        else:
            self.wtype, self.wnp = self.real, self.real_np
            self.pixel = self.lin = self.mem = self.bias = self.real
            self.sum = "double"
            self.input_t = self.real
            self.input_file_t, self.input_file_np = ("double", np.float64) if self.rate else (self.real, self.real_np)
            self.sum_np = np.float64

    def is_copy(self, lay: Layer) -> bool:
        """Fixed point: a depthwise 0/1 conv/deconv without neuron or bias routes integers (see fixedpoint)."""
        return self.fixed and lay.op in ("conv", "deconv") and is_copy_layer(lay, self.shapes[lay.inputs[0]][0])

    def widest(self, types: list[str]) -> str:
        """The C type that holds values of all `types` (activation buffers: int8 spikes, pixels, linear)."""
        order = ["int8_t", "int32_t", "int64_t"] if self.fixed else ["int8_t", self.real]
        return order[max(order.index(t) for t in types)]

    # ---- parameters ------------------------------------------------------------------------------------
    def param(self, fieldname: str, ctype: str, array: np.ndarray) -> None:
        self.params.append(_Param(fieldname, ctype, np.ascontiguousarray(array)))
        self.fields.append(f"const {ctype} *{fieldname};")

    def alloc(self, fieldname: str, ctype: str, count: int) -> None:
        self.allocs.append((fieldname, ctype, int(count)))
        self.fields.append(f"{ctype} *{fieldname};")

    # ---- driver ----------------------------------------------------------------------------------------
    def run(self) -> Project:
        net = self.net
        for lay in net.layers:
            getattr(self, f"_layer_{lay.op}")(lay, self.index[lay.name])
        outputs = [(name, tuple(net.layer(name).shape)) for name in net.outputs]
        neuron_layers = [(lay.name, int(np.prod(lay.shape))) for lay in net.neuron_layers]
        units = {}
        for k, name in enumerate(net.outputs):
            c = self.shapes[name][0]
            unit = np.asarray(self.units[name], np.float64) * np.ones(c)
            units[name] = unit
            self.alloc(f"s{k}", self.sum, int(np.prod(self.shapes[name])))
            self.param(f"u{k}", "double", unit)
        header = self._header(outputs, neuron_layers)
        source, weights_h = self._source(outputs, neuron_layers)
        layout_hash = hashlib.sha256((header + source + (weights_h or "")).encode()).hexdigest()[:32]
        source = source.replace("@LAYOUT_HASH@", layout_hash)
        files = {"snn_model.h": header.encode(), "snn_model.c": source.encode(),
                 "main.c": runtime.MAIN_C.encode(),
                 "Makefile": runtime.MAKEFILE.format(extra_deps=" weights.h" if weights_h else "").encode()}
        if weights_h is not None:
            files["weights.h"] = weights_h.encode()
        else:
            files["weights.bin"] = self._blob(layout_hash)
        return Project(files=files, mode=self.mode, input_shape=self.shapes[net.input_layers[0].name],
                       input_file_dtype=np.dtype(self.input_file_np), sum_dtype=np.dtype(self.sum_np),
                       outputs=outputs, neuron_layers=neuron_layers, layout_hash=layout_hash, out_units=units,
                       weight_bytes=sum(p.array.nbytes for p in self.params),
                       state_bytes=sum(n * _CTYPE_BYTES[t] for _, t, n in self.allocs))

    # ---- layers ----------------------------------------------------------------------------------------
    def _layer_input(self, lay: Layer, i: int) -> None:
        self.otype[lay.name] = "int8_t" if self.rate else self.pixel
        self.alloc(f"o{i}", self.otype[lay.name], int(np.prod(self.shapes[lay.name])))
        self.vmax[lay.name] = 1 if self.rate else None
        c = self.shapes[lay.name][0]
        self.units[lay.name] = self.q[lay.name].out_unit if self.fixed else np.ones(c)
        self.input_only[lay.name] = not self.rate
        self.input_index = i

    def _routing_common(self, lay: Layer, i: int) -> None:
        for s in lay.inputs:
            if self.fixed and self.otype[s] == "int64_t":
                raise SnncError(f"C backend: layer {lay.name} routes the linear layer {s}; fixed-point mode "
                                "only allows linear layers as outputs (use float mode)")
        self.otype[lay.name] = self.widest([self.otype[s] for s in lay.inputs])
        bounds = [self.vmax.get(s) for s in lay.inputs]
        self.vmax[lay.name] = None if any(b is None for b in bounds) else max(bounds)
        self.units[lay.name] = np.concatenate([np.asarray(self.units[s], np.float64) for s in lay.inputs])
        self.input_only[lay.name] = all(self.input_only[s] for s in lay.inputs)
        self.alloc(f"o{i}", self.otype[lay.name], int(np.prod(self.shapes[lay.name])))

    def _layer_concat(self, lay: Layer, i: int) -> None:
        if int(lay.attrs.get("axis", 0)) != 0:
            raise SnncError(f"C backend: concat {lay.name} must be along the channel axis (axis 0)")
        self._routing_common(lay, i)
        c, h, w = self.shapes[lay.name]
        lines, off = [], 0
        for s in lay.inputs:
            cs, hs, ws = self.shapes[s]
            if (hs, ws) != (h, w):
                raise SnncError(f"C backend: concat {lay.name}: input {s} is {hs}x{ws}, expected {h}x{w}")
            if self.otype[s] == self.otype[lay.name]:
                lines.append(f"        memcpy(o + p * {c} + {off}, c->o{self.index[s]} + p * {cs}, "
                             f"{cs} * sizeof *o);")
            else:
                ot, si = self.otype[lay.name], self.index[s]
                lines.append(f"        for (int j = 0; j < {cs}; ++j)\n"
                             f"            o[p * {c} + {off} + j] = ({ot})c->o{si}[p * {cs} + j];")
            off += cs
        if off != c:
            raise SnncError(f"C backend: concat {lay.name}: inputs have {off} channels, the layer {c}")
        body = "\n".join(lines)
        self.funcs.append(f"""/* {_comment(lay.name)}: concat {_comment(', '.join(lay.inputs))} */
static void snn_layer_{i}(snn_ctx *c)
{{
    {self.otype[lay.name]} *o = c->o{i};
    for (int p = 0; p < {h * w}; ++p) {{
{body}
    }}
}}
""")
        self.step_calls.append(f"snn_layer_{i}(c);")

    def _layer_pad(self, lay: Layer, i: int) -> None:
        self._routing_common(lay, i)
        mode = lay.attrs.get("mode", "constant")
        if mode not in ("constant", "edge"):
            raise SnncError(f"C backend: pad {lay.name}: mode {mode!r} (only 'constant' 0 and 'edge')")
        if mode == "constant" and float(lay.attrs.get("value", 0.0) or 0.0) != 0.0:
            raise SnncError(f"C backend: pad {lay.name}: constant pads must be 0")
        pt, pl, pb, pr = _pads(lay.attrs)
        c, h, w = self.shapes[lay.name]
        src = lay.inputs[0]
        cs, hs, ws = self.shapes[src]
        if (cs, hs + pt + pb, ws + pl + pr) != (c, h, w):
            raise SnncError(f"C backend: pad {lay.name}: shape {(c, h, w)} does not match input {(cs, hs, ws)} "
                            f"with pads {[pt, pl, pb, pr]}")
        if mode == "edge":
            inner = f"""        int sy = oy - {pt};
        sy = sy < 0 ? 0 : (sy >= {hs} ? {hs - 1} : sy);
        for (int ox = 0; ox < {w}; ++ox) {{
            int sx = ox - {pl};
            sx = sx < 0 ? 0 : (sx >= {ws} ? {ws - 1} : sx);
            memcpy(o + (oy * {w} + ox) * {c}, in + (sy * {ws} + sx) * {c}, {c} * sizeof *o);
        }}"""
        else:
            inner = f"""        const int sy = oy - {pt};
        for (int ox = 0; ox < {w}; ++ox) {{
            const int sx = ox - {pl};
            if (sy < 0 || sy >= {hs} || sx < 0 || sx >= {ws})
                memset(o + (oy * {w} + ox) * {c}, 0, {c} * sizeof *o);
            else
                memcpy(o + (oy * {w} + ox) * {c}, in + (sy * {ws} + sx) * {c}, {c} * sizeof *o);
        }}"""
        self.funcs.append(f"""/* {_comment(lay.name)}: pad {mode} {[pt, pl, pb, pr]} of {_comment(src)} */
static void snn_layer_{i}(snn_ctx *c)
{{
    {self.otype[lay.name]} *o = c->o{i};
    const {self.otype[src]} *in = c->o{self.index[src]};
    for (int oy = 0; oy < {h}; ++oy) {{
{inner}
    }}
}}
""")
        self.step_calls.append(f"snn_layer_{i}(c);")

    def _layer_maxpool(self, lay: Layer, i: int) -> None:
        """The spike-count max-pool (snnc.ir.countpool): S += in; M = window max of S; out = M - M_prev. Both loops
        over the threads (every element on its own: the same results for any thread count)."""
        self._routing_common(lay, i)
        self.input_only[lay.name] = False  # it keeps state (the running sums), so it runs every step
        (kh, kw), (sh, sw) = lay.attrs["kernel_shape"], lay.attrs["strides"]
        c, h, w = self.shapes[lay.name]
        src = lay.inputs[0]
        cs, hs, ws = self.shapes[src]
        if (cs, (hs - kh) // sh + 1, (ws - kw) // sw + 1) != (c, h, w) or kh > hs or kw > ws:
            raise SnncError(f"C backend: maxpool {lay.name}: shape {(c, h, w)} does not match input {(cs, hs, ws)}")
        acc = "int64_t" if self.fixed else "double"
        self.alloc(f"ps{i}", acc, cs * hs * ws)
        self.alloc(f"pm{i}", acc, c * h * w)
        self.reset_lines.append(f"    memset(c->ps{i}, 0, {cs * hs * ws}u * sizeof *c->ps{i});\n"
                                f"    memset(c->pm{i}, 0, {c * h * w}u * sizeof *c->pm{i});")
        self.funcs.append(f"""/* {_comment(lay.name)}: count max-pool {kh}x{kw} stride {sh}x{sw} of {_comment(src)} */
static void snn_layer_{i}(snn_ctx *c)
{{
    {self.otype[lay.name]} *o = c->o{i};
    const {self.otype[src]} *in = c->o{self.index[src]};
    {acc} *s = c->ps{i}, *m = c->pm{i};
#ifdef _OPENMP
#pragma omp parallel for schedule(static)
#endif
    for (int k = 0; k < {cs * hs * ws}; ++k)
        s[k] += ({acc})in[k];
#ifdef _OPENMP
#pragma omp parallel for schedule(static)
#endif
    for (int oy = 0; oy < {h}; ++oy)
        for (int ox = 0; ox < {w}; ++ox)
            for (int ch = 0; ch < {c}; ++ch) {{
                {acc} best = s[((oy * {sh}) * {ws} + ox * {sw}) * {c} + ch];
                for (int ky = 0; ky < {kh}; ++ky)
                    for (int kx = 0; kx < {kw}; ++kx) {{
                        const {acc} v = s[((oy * {sh} + ky) * {ws} + ox * {sw} + kx) * {c} + ch];
                        best = v > best ? v : best;
                    }}
                const int q = (oy * {w} + ox) * {c} + ch;
                o[q] = ({self.otype[lay.name]})(best - m[q]);
                m[q] = best;
            }}
}}
""")
        self.step_calls.append(f"snn_layer_{i}(c);")

    def _connection_common(self, lay: Layer, i: int) -> tuple[str, str, bool, str]:
        """Parameters, buffers and the update statement shared by conv / deconv / dense."""
        if lay.weight is None:
            raise SnncError(f"C backend: layer {lay.name} has no weights")
        if len(lay.inputs) != 1:
            raise SnncError(f"C backend: layer {lay.name} must have exactly one input")
        src = lay.inputs[0]
        self.src_t = self.otype[src]
        if self.fixed and self.src_t == "int64_t":
            raise SnncError(f"C backend: layer {lay.name}: its input {src} is a linear layer without neurons; "
                            "fixed-point mode only allows those as network outputs (use float mode)")
        c_out = self.shapes[lay.name][0]
        if self.fixed:
            q = self.q[lay.name]
            w = q.w_int  # int32; an int64 copy of yolov3-tiny's 48 M weights cost seconds per render
            b = q.b_int.astype(np.int64)
        else:
            # as the NumPy reference: the source's units (theta of a spiking source) folded into the weights in
            # float64, then rounded to the arithmetic type; spikes travel as +-1
            w = fold_units(lay, lay.weight, np.asarray(self.units[src], np.float64)).astype(self.real_np)
            b = (np.zeros(c_out) if lay.bias is None else lay.bias).astype(self.real_np)
        self._weight_array = w
        self.param(f"b{i}", self.bias, b.reshape(c_out))
        n_out = int(np.prod(self.shapes[lay.name]))
        input_only = self.input_only[src]
        # a layer without neurons is a function of its input: it stays input-only if its source is
        self.input_only[lay.name] = input_only and lay.neuron is None
        vmax = self.vmax[src]
        spikes = vmax == 1
        self.vmax[lay.name] = 1 if lay.neuron is not None else None
        if lay.neuron is not None and lay.neuron.graded:  # graded payloads: integers up to the largest (fixed)
            q = self.q[lay.name] if self.fixed else None
            self.vmax[lay.name] = int(max(q.payload_pos, q.payload_neg.max())) if self.fixed else None
        if self.fixed:
            self.units[lay.name] = self.q[lay.name].out_unit
            bound = _abs_sum_bound(lay, w)
            # exact int32 accumulation where |sum| provably fits; pixel-fed layers (unbounded input) use int64
            acc = "int32_t" if vmax is not None and bound * vmax < _INT32_MAX else "int64_t"
            if self.is_copy(lay) and vmax is not None:
                self.vmax[lay.name] = int(np.abs(w).reshape(w.shape[0], -1).sum(1, dtype=np.int64).max(initial=0)) * vmax
        else:
            acc = self.real
            theta = lay.neuron.threshold.astype(np.float64) * np.ones(c_out) if lay.neuron is not None else None
            self.units[lay.name] = theta if theta is not None else np.ones(c_out)
        if spikes:
            update = ("if (v > 0) {{ for (int co = 0; co < {n}; ++co) zp[co] += wp[co]; }} "
                      "else {{ for (int co = 0; co < {n}; ++co) zp[co] -= wp[co]; }}")
        else:
            update = f"for (int co = 0; co < {{n}}; ++co) zp[co] += ({acc})v * wp[co];"
        if input_only:
            # the input current of a layer fed by the input image alone: recomputed only when the image changes
            self.alloc(f"z{i}", acc, n_out)
            zdecl = f"{acc} *z = c->z{i};"
        else:
            self.scratch_elems = max(self.scratch_elems, n_out)
            zdecl = f"{acc} *z = ({acc} *)c->scratch;"
        return acc, zdecl, input_only, update

    def _epilogue(self, lay: Layer, i: int, acc: str) -> str:
        c, h, w = self.shapes[lay.name]
        n = lay.neuron
        if n is None:
            if self.is_copy(lay):
                vmax = self.vmax[lay.name]
                out_t = "int8_t" if vmax is not None and vmax <= 127 else "int32_t"
            else:
                out_t = self.lin
            self.otype[lay.name] = out_t
            self.alloc(f"o{i}", out_t, c * h * w)
            cast = f"({out_t})" if self.fixed else ""
            zcast = "(int64_t)" if self.fixed else ""
            return f"""    {{
        {out_t} *o = c->o{i};
        const {self.bias} *b = c->b{i};
        for (int p = 0; p < {h * w}; ++p)
            for (int ch = 0; ch < {c}; ++ch)
                o[p * {c} + ch] = {cast}({zcast}z[p * {c} + ch] + b[ch]);
    }}"""
        graded = bool(n.graded)  # payloads instead of +-1 (docs/neurons.md, "Graded signed memory neuron")
        out_t = ("int32_t" if self.fixed else self.real) if graded else "int8_t"
        self.otype[lay.name] = out_t
        self.alloc(f"o{i}", out_t, c * h * w)
        self.alloc(f"v{i}", self.mem, c * h * w)
        self.fields.append(f"int64_t n{i};")
        if self.fixed:
            q = self.q[lay.name]
            th, v0 = q.theta_int, q.v0_int
            tn = q.theta_neg_int if n.kind == "SignedIF" else None
        else:
            theta = (n.threshold * np.ones(c, np.float32)).astype(np.float32)
            th = theta.astype(self.real_np)
            v0 = (float(n.v_init) * theta.astype(np.float64)).astype(np.float32).astype(self.real_np)
            tn = (theta / np.float32(n.alpha)).astype(self.real_np) if n.kind == "SignedIF" else None
        self.param(f"th{i}", self.mem, np.asarray(th).reshape(c))
        self.param(f"v0_{i}", self.mem, np.asarray(v0).reshape(c))
        if self.fixed and graded:
            tn = q.theta_neg_int
        elif graded:
            tn = (n.neg_threshold * np.ones(c, np.float32)).astype(self.real_np)
        if tn is not None:
            self.param(f"tn{i}", self.mem, np.asarray(tn).reshape(c))
        if graded:  # a negative-side spike's payload per channel; a positive-side one's is pp (the same layout)
            if self.fixed:
                pp, pn = np.full(c, q.payload_pos, np.int32), q.payload_neg.astype(np.int32)
            else:
                theta32 = (n.threshold * np.ones(c, np.float32)).astype(np.float32)
                pp = np.ones(c, self.real_np)
                pn = (n.neg_payload * np.ones(c, np.float32) / theta32).astype(np.float32).astype(self.real_np)
            self.param(f"pp{i}", out_t, pp)
            self.param(f"pn{i}", out_t, pn)
            # the negative side's level r (Neuron.neg_level): dn at v <= r - tn, back_dn at v > r
            lv = q.neg_level_int if self.fixed else (n.neg_level * np.ones(c, np.float32)).astype(self.real_np)
            self.param(f"lv{i}", self.mem, np.asarray(lv).reshape(c))
        memory = bool(n.memory)
        if memory:  # the emitted count per neuron (+1 spikes minus -1 spikes, |m| <= steps)
            self.alloc(f"m{i}", "int32_t", c * h * w)
        self.reset_lines.append(f"""    for (int p = 0; p < {h * w}; ++p)
        for (int ch = 0; ch < {c}; ++ch)
            c->v{i}[p * {c} + ch] = c->v0_{i}[ch];
    c->n{i} = 0;""" + (f"\n    memset(c->m{i}, 0, {c * h * w}u * sizeof *c->m{i});" if memory else ""))
        zval = "(int64_t)z[k]" if self.fixed else "z[k]"
        # branch-free so that the compiler vectorizes it; the same arithmetic as docs/neurons.md
        if tn is not None and memory:  # signed memory neuron: the NumPy scan's order, see the module docstring
            fire = self._signed_memory_fire(level=graded)
            if graded:  # the spike's side is that of the count it moves: n_before + n_after = 2 m + s
                fire = fire.replace("o[k] = (int8_t)s;",
                                    f"o[k] = ({out_t})(s * ((2 * m + s < 0) ? pn[ch] : pp[ch]));")
        elif self.fixed:
            fire = """            const int64_t ge = v >= th[ch];
            v -= th[ch] & -ge;"""
            if tn is not None:
                fire += """
            const int64_t le = v <= -tn[ch];
            v += tn[ch] & -le;
            o[k] = (int8_t)(ge - le);
            cnt += ge + le;"""
            elif memory:  # after a +1 spike v >= 0, so ge and le exclude each other
                fire += """
            const int64_t le = (v < 0) & (M[k] > 0);
            v += th[ch] & -le;
            o[k] = (int8_t)(ge - le);
            M[k] += (int32_t)(ge - le);
            cnt += ge + le;"""
            else:
                fire += """
            o[k] = (int8_t)ge;
            cnt += ge;"""
        else:
            fire = """            const int ge = v >= th[ch];
            v = ge ? v - th[ch] : v;"""
            if tn is not None:
                fire += """
            const int le = v <= -tn[ch];
            v = le ? v + tn[ch] : v;
            o[k] = (int8_t)(ge - le);
            cnt += ge + le;"""
            elif memory:
                fire += """
            const int le = (v < 0) & (M[k] > 0);
            v = le ? v + th[ch] : v;
            o[k] = (int8_t)(ge - le);
            M[k] += ge - le;
            cnt += ge + le;"""
            else:
                fire += """
            o[k] = (int8_t)ge;
            cnt += ge;"""
        tn_decl = f"\n        const {self.mem} *tn = c->tn{i};" if tn is not None else ""
        if memory:
            tn_decl += f"\n        int32_t *M = c->m{i};"
        if graded:
            tn_decl += (f"\n        const {out_t} *pp = c->pp{i}, *pn = c->pn{i};"
                        f"\n        const {self.mem} *lv = c->lv{i};")
        return f"""    {{
        {self.mem} *V = c->v{i};
        {out_t} *o = c->o{i};
        const {self.bias} *b = c->b{i};
        const {self.mem} *th = c->th{i};{tn_decl}
        int64_t cnt = 0;
#ifdef _OPENMP
#pragma omp parallel for reduction(+:cnt) schedule(static)
#endif
        for (int p = 0; p < {h * w}; ++p) {{
          SNN_SIMD_COUNT
          for (int ch = 0; ch < {c}; ++ch) {{
            const int k = p * {c} + ch;
            {self.mem} v = V[k] + ({zval} + b[ch]);
{fire}
            V[k] = v;
          }}
        }}
        c->n{i} += cnt;
    }}"""

    def _signed_memory_fire(self, level: bool = False) -> str:
        """The signed memory neuron's update of v (already integrated) and its count M[k]; `level`: the negative
        side counts from lv[ch] (graded neurons: dn at v <= lv - tn and not after an up, back_dn at v > lv)."""
        code = self._signed_memory_code()
        if level:
            code = (code.replace("(v <= -tn[ch]) & (m <= 0)", "(v <= lv[ch] - tn[ch]) & (m <= 0) & !up")
                    .replace("(v > 0) & (m < 0)", "(v > lv[ch]) & (m < 0)"))
        return code

    def _signed_memory_code(self) -> str:
        if self.fixed:
            return """            const int64_t m = M[k];
            const int64_t up = (v >= th[ch]) & (m >= 0);
            v -= th[ch] & -up;
            const int64_t back_up = (v < 0) & (m > 0);
            v += th[ch] & -back_up;
            const int64_t dn = (v <= -tn[ch]) & (m <= 0);
            v += tn[ch] & -dn;
            const int64_t back_dn = (v > 0) & (m < 0);
            v -= tn[ch] & -back_dn;
            const int64_t s = up + back_dn - back_up - dn;
            o[k] = (int8_t)s;
            M[k] += (int32_t)s;
            cnt += s != 0;"""
        return """            const int32_t m = M[k];
            const int up = (v >= th[ch]) & (m >= 0);
            v = up ? v - th[ch] : v;
            const int back_up = (v < 0) & (m > 0);
            v = back_up ? v + th[ch] : v;
            const int dn = (v <= -tn[ch]) & (m <= 0);
            v = dn ? v + tn[ch] : v;
            const int back_dn = (v > 0) & (m < 0);
            v = back_dn ? v - tn[ch] : v;
            const int s = up + back_dn - back_up - dn;
            o[k] = (int8_t)s;
            M[k] += s;
            cnt += s != 0;"""

    def _emit_connection(self, lay: Layer, i: int, what: str, loops: str, acc: str, zdecl: str,
                         input_only: bool, n_z: int, rows: int | None) -> None:
        """The layer's function: z from the scatter loops, then the neuron update. With OpenMP each thread
        owns a band [r_lo, r_hi) of the output's `rows` and scatters only the input rows that reach it, writing
        only inside it: each z element is summed by one thread in the single-threaded order, so float results do
        not depend on the thread count. rows None: one thread (dense layers)."""
        epilogue = self._epilogue(lay, i, acc)
        guard_open = "    if (c->input_changed) {\n" if input_only and self.constant_input else "    {\n"
        parallel, band = "", ""
        if rows is not None:
            parallel = "#ifdef _OPENMP\n#pragma omp parallel\n#endif"
            band = (f"\n        const int r_lo = SNN_SLICE({rows}, SNN_THREAD_ID, SNN_THREADS);"
                    f"\n        const int r_hi = SNN_SLICE({rows}, SNN_THREAD_ID + 1, SNN_THREADS);")
        self.funcs.append(f"""/* {_comment(lay.name)}: {what} */
static void snn_layer_{i}(snn_ctx *c)
{{
    {zdecl}
{guard_open}        const {self.src_t} *in = c->o{self.index[lay.inputs[0]]};
        const {self.wtype} *W = c->w{i};
        memset(z, 0, {n_z} * sizeof *z);
{parallel}
        {{{band}
{loops}
        }}
    }}
{epilogue}
}}
""")
        self.step_calls.append(f"snn_layer_{i}(c);")

    def _layer_conv(self, lay: Layer, i: int) -> None:
        acc, zdecl, input_only, update = self._connection_common(lay, i)
        w = self._weight_array
        c_out, h_out, w_out = self.shapes[lay.name]
        c_in, h_in, w_in = self.shapes[lay.inputs[0]]
        group = int(lay.attrs.get("group", 1))
        sh, sw = _pair(lay.attrs, "strides", 1)
        dh, dw = _pair(lay.attrs, "dilations", 1)
        pt, pl, pb, pr = _pads(lay.attrs)
        if w.ndim != 4 or c_in % group or c_out % group or w.shape[0] != c_out or w.shape[1] * group != c_in:
            raise SnncError(f"C backend: conv {lay.name}: weight {w.shape} does not fit {c_in} -> {c_out} "
                            f"channels in {group} groups")
        kh, kw = w.shape[2:]
        eh = (h_in + pt + pb - (dh * (kh - 1) + 1)) // sh + 1
        ew = (w_in + pl + pr - (dw * (kw - 1) + 1)) // sw + 1
        if (eh, ew) != (h_out, w_out):
            raise SnncError(f"C backend: conv {lay.name}: output {h_out}x{w_out} but the attributes give {eh}x{ew}")
        cin_g, cout_g = c_in // group, c_out // group
        # (C_out, C_in/g, kh, kw) -> [ci][ky][kx][co within the group]
        wt = w.reshape(group, cout_g, cin_g, kh, kw).transpose(0, 2, 3, 4, 1).reshape(c_in, kh, kw, cout_g)
        self.param(f"w{i}", self.wtype, wt.astype(self.wnp))
        what = (f"conv {c_in}->{c_out} k{kh}x{kw} s{sh},{sw} pads {[pt, pl, pb, pr]} d{dh},{dw} g{group} "
                f"{h_in}x{w_in}->{h_out}x{w_out}")
        if group == 1 and self._weights_outer(wt.size * _CTYPE_BYTES[self.wtype], c_out * h_out * w_out, acc):
            loops = self._conv_weights_outer(lay, acc, c_in, c_out, h_in, w_in, h_out, w_out, kh, kw,
                                             (sh, sw), (dh, dw), (pt, pl), wt)
            what += ", input channel outer"
        elif group == 1:  # input channels in blocks of GATHER_BLOCK at each position, their nonzeros four at a time
            taps = self._conv_taps(acc, "", "z", c_out, c_out, w_out, kh, kw, (sh, sw), (dh, dw), (pt, pl),
                                   body=self._gathered_update(acc, c_out))
            block = min(c_in, GATHER_BLOCK)
            loops = f"""{_conv_rows(h_in, sh, pt, dh, kh)}
        for (int iy = iy_lo; iy < iy_hi; ++iy)
        for (int ix = 0; ix < {w_in}; ++ix)
        for (int cb = 0; cb < {c_in}; cb += {block}) {{
{self._gather(acc, f"in + (iy * {w_in} + ix) * {c_in} + cb", f"SNN_MIN({block}, {c_in} - cb)", block,
              kh * kw * c_out)}
{taps}
        }}"""
        else:
            gsel = f"(ci / {cin_g}) * {cout_g}"
            loops = f"""{_conv_rows(h_in, sh, pt, dh, kh)}
        for (int iy = iy_lo; iy < iy_hi; ++iy)
        for (int ix = 0; ix < {w_in}; ++ix) {{
          const {self.src_t} *ip = in + (iy * {w_in} + ix) * {c_in};
          for (int ci = 0; ci < {c_in}; ++ci) {{
            const {self.src_t} v = ip[ci];
            const {self.wtype} *wc;
            {acc} *zg;
            if (v == 0) continue;
            wc = W + ci * {kh * kw * cout_g};
            zg = z + {gsel};
{self._conv_taps(acc, update, 'zg', cout_g, c_out, w_out, kh, kw, (sh, sw), (dh, dw), (pt, pl))}
          }}
        }}"""
        self._emit_connection(lay, i, what, loops, acc, zdecl, input_only, c_out * h_out * w_out, h_out)

    @staticmethod
    def _weights_outer(weight_bytes: int, n_z: int, acc: str) -> bool:
        """Loop over input channels outermost where the weights outweigh the input current z: each channel's
        weights (kh x kw x C_out) are then read once per step and stay in cache while its spikes scatter them,
        instead of all the weights streaming from memory again at every input position (the deep 13 x 13 layers
        of yolov3-tiny: 56 MB of weights, 1.4 MB of z)."""
        return weight_bytes > n_z * _CTYPE_BYTES[acc]

    def _conv_weights_outer(self, lay: Layer, acc: str, c_in: int, c_out: int, h_in: int, w_in: int,
                            h_out: int, w_out: int, kh: int, kw: int, stride: tuple[int, int],
                            dilation: tuple[int, int], pad: tuple[int, int], wt: np.ndarray) -> str:
        """The scatter loops of an ungrouped conv with blocks of GATHER_BLOCK input channels outermost (their
        weights stay in cache while the block's nonzeros scatter them). (Tiling the output channels so that z's
        slice fits in L2 was measured 6-17 % slower per step on yolov3-tiny: not done.)

        Fixed point whose sums need int64 (yolov3-tiny's deep layers: 16-bit weights times graded payloads) but
        whose blocks' sums fit int32: the blocks add into an int32 z32 of their own, flushed into the int64 z by
        each thread for its rows every `flush` blocks, before |z32| could pass 2**31 - 1 (exact: integers)."""
        (sh, sw), (dh, dw), (pt, pl) = stride, dilation, pad
        block = min(c_in, GATHER_BLOCK)
        flush = self._int32_blocks(acc, wt, block, self.vmax[lay.inputs[0]])
        part, zname = (acc, "z") if flush is None else ("int32_t", "z32")
        taps = self._conv_taps(part, "", zname, c_out, c_out, w_out, kh, kw, stride, dilation, pad,
                               body=self._gathered_update(part, c_out))
        scatter = f"""        for (int iy = iy_lo; iy < iy_hi; ++iy)
        for (int ix = 0; ix < {w_in}; ++ix) {{
{self._gather(part, f"in + (iy * {w_in} + ix) * {c_in} + cb", f"SNN_MIN({block}, {c_in} - cb)", block,
              kh * kw * c_out)}
{taps}
        }}"""
        if flush is None:
            return f"""{_conv_rows(h_in, sh, pt, dh, kh)}
        for (int cb = 0; cb < {c_in}; cb += {block})
{scatter}"""
        self.scratch32_elems = max(self.scratch32_elems, c_out * h_out * w_out)
        return f"""{_conv_rows(h_in, sh, pt, dh, kh)}
        int32_t *z32 = c->scratch32;
        for (long k = (long)r_lo * {w_out * c_out}; k < (long)r_hi * {w_out * c_out}; ++k)
          z32[k] = 0;
        for (int cb = 0; cb < {c_in}; cb += {block}) {{
{scatter}
        if ((cb / {block}) % {flush} == {flush - 1} || cb + {block} >= {c_in})
          for (long k = (long)r_lo * {w_out * c_out}; k < (long)r_hi * {w_out * c_out}; ++k) {{
            z[k] += z32[k];
            z32[k] = 0;
          }}
        }}"""

    def _int32_blocks(self, acc: str, wt: np.ndarray, block: int, vmax: int | None) -> int | None:
        """How many blocks of input channels may add into an int32 before a flush (None: not applicable)."""
        if not self.fixed or acc != "int64_t" or vmax is None:
            return None
        a = np.abs(wt)  # [ci][ky][kx][co], int32 w_int (|w| <= 2**15): no int64 copy of the weights; sums in int64
        per_block = max(int(a[c0:c0 + block].sum(axis=(0, 1, 2), dtype=np.int64).max(initial=0))
                        for c0 in range(0, len(a), block))
        most = per_block * int(vmax)
        if most == 0 or most >= _INT32_MAX:
            return None
        return int(_INT32_MAX // most)

    def _gather(self, acc: str, at: str, count: str, block: int, stride: int) -> str:
        """The nonzero inputs among `count` channels at `at` (one position) as values val[] and weight rows wc[]
        (input channel cb + j starts at W + (cb + j) * stride), padded with zeros to a multiple of four; on to
        the next position when there are none."""
        return f"""          const {self.src_t} *ip = {at};
          {acc} val[{block + 3}];
          const {self.wtype} *wc[{block + 3}];
          int m = 0;
          for (int j = 0; j < {count}; ++j)
            if (ip[j] != 0) {{ val[m] = ({acc})ip[j]; wc[m] = W + (cb + j) * {stride}; ++m; }}
          if (m == 0) continue;
          while (m & 3) {{ val[m] = 0; wc[m] = wc[0]; ++m; }}"""

    def _gathered_update(self, acc: str, n: int) -> str:
        """z at one tap += four gathered inputs times their weight rows at a time: z is loaded and stored once
        per four inputs, not once per input (1.2-1.3x faster steps on yolov3-tiny than one scatter per input).
        Integers sum exactly in any order; float mode rounds (a + b) + (c + d) where one scatter per input
        rounded after each, a difference within float rounding (spike flips as between any two summation
        orders; docs/backend_c.md). A padding input is 0: it adds exactly nothing."""
        return f"""                for (int g = 0; g < m; g += 4) {{
                  const {self.wtype} *restrict w0 = wc[g] + tap, *restrict w1 = wc[g + 1] + tap;
                  const {self.wtype} *restrict w2 = wc[g + 2] + tap, *restrict w3 = wc[g + 3] + tap;
                  const {acc} v0 = val[g], v1 = val[g + 1], v2 = val[g + 2], v3 = val[g + 3];
                  for (int co = 0; co < {n}; ++co)
                    zp[co] += (v0 * w0[co] + v1 * w1[co]) + (v2 * w2[co] + v3 * w3[co]);
                }}"""

    def _conv_taps(self, acc: str, update: str, z_base: str, n: int, c_out: int, w_out: int, kh: int, kw: int,
                   stride: tuple[int, int], dilation: tuple[int, int], pad: tuple[int, int],
                   body: str | None = None) -> str:
        """The (ky, kx) loops of a conv's scatter for one nonzero input v at (iy, ix): the output position of
        each tap, kept inside this thread's rows [r_lo, r_hi), and the update of its n channels at z_base
        (`update` with wp the tap's weight row; or `body`, given zp and the tap's offset `tap` in a weight row)."""
        (sh, sw), (dh, dw), (pt, pl) = stride, dilation, pad
        ycheck = f"if (ny % {sh}) continue;\n" if sh > 1 else ""
        xcheck = f"if (nx % {sw}) continue;\n" if sw > 1 else ""
        if body is None:
            wdecl = f"const {self.wtype} *restrict wp;"
            inner = f"                wp = wc + (ky * {kw} + kx) * {n};\n                {update.format(n=n)}"
        else:
            wdecl = f"const int tap = (ky * {kw} + kx) * {n};"
            inner = body
        return f"""            for (int ky = 0; ky < {kh}; ++ky) {{
              const int ny = iy + {pt} - ky * {dh};
              if (ny < r_lo * {sh}) break;
              {ycheck}              if (ny / {sh} >= r_hi) continue;
              for (int kx = 0; kx < {kw}; ++kx) {{
                const int nx = ix + {pl} - kx * {dw};
                {acc} *restrict zp;
                {wdecl}
                if (nx < 0) break;
                {xcheck}                if (nx / {sw} >= {w_out}) continue;
                zp = {z_base} + ((ny / {sh}) * {w_out} + nx / {sw}) * {c_out};
{inner}
              }}
            }}"""

    def _layer_deconv(self, lay: Layer, i: int) -> None:
        acc, zdecl, input_only, update = self._connection_common(lay, i)
        w = self._weight_array
        c_out, h_out, w_out = self.shapes[lay.name]
        c_in, h_in, w_in = self.shapes[lay.inputs[0]]
        group = int(lay.attrs.get("group", 1))
        sh, sw = _pair(lay.attrs, "strides", 1)
        dh, dw = _pair(lay.attrs, "dilations", 1)
        oph, opw = _pair(lay.attrs, "output_padding", 0)
        pt, pl, pb, pr = _pads(lay.attrs)
        if w.ndim != 4 or c_in % group or w.shape[0] != c_in or w.shape[1] * group != c_out:
            raise SnncError(f"C backend: deconv {lay.name}: weight {w.shape} does not fit {c_in} -> {c_out} "
                            f"channels in {group} groups")
        kh, kw = w.shape[2:]
        eh = sh * (h_in - 1) + oph + dh * (kh - 1) + 1 - pt - pb
        ew = sw * (w_in - 1) + opw + dw * (kw - 1) + 1 - pl - pr
        if (eh, ew) != (h_out, w_out):
            raise SnncError(f"C backend: deconv {lay.name}: output {h_out}x{w_out} but the attributes give "
                            f"{eh}x{ew}")
        cin_g, cout_g = c_in // group, c_out // group
        wt = w.transpose(0, 2, 3, 1)  # (C_in, C_out/g, kh, kw) -> [ci][ky][kx][co within the group]
        self.param(f"w{i}", self.wtype, wt.astype(self.wnp))
        gsel = f"(ci / {cin_g}) * {cout_g}" if group > 1 else "0"
        # input rows that reach output rows [r_lo, r_hi): oy = iy * sh - pt + ky * dh (a conservative range;
        # the ky loop checks each oy)
        loops = f"""        const int iy_lo = SNN_MAX(0, (r_lo + {pt} - {dh * (kh - 1)}) / {sh});
        const int iy_hi = SNN_MIN({h_in}, (r_hi - 1 + {pt}) / {sh} + 1);
        for (int iy = iy_lo; iy < iy_hi; ++iy)
        for (int ix = 0; ix < {w_in}; ++ix) {{
          const {self.src_t} *ip = in + (iy * {w_in} + ix) * {c_in};
          for (int ci = 0; ci < {c_in}; ++ci) {{
            const {self.src_t} v = ip[ci];
            const {self.wtype} *wc;
            {acc} *zg;
            if (v == 0) continue;
            wc = W + ci * {kh * kw * cout_g};
            zg = z + {gsel};
            for (int ky = 0; ky < {kh}; ++ky) {{
              const int oy = iy * {sh} - {pt} + ky * {dh};
              if (oy < r_lo) continue;
              if (oy >= r_hi) break;
              for (int kx = 0; kx < {kw}; ++kx) {{
                const int ox = ix * {sw} - {pl} + kx * {dw};
                {acc} *restrict zp;
                const {self.wtype} *restrict wp;
                if (ox < 0) continue;
                if (ox >= {w_out}) break;
                zp = zg + (oy * {w_out} + ox) * {c_out};
                wp = wc + (ky * {kw} + kx) * {cout_g};
                {update.format(n=cout_g)}
              }}
            }}
          }}
        }}"""
        what = (f"deconv {c_in}->{c_out} k{kh}x{kw} s{sh},{sw} pads {[pt, pl, pb, pr]} d{dh},{dw} g{group} "
                f"out_pad {oph},{opw} {h_in}x{w_in}->{h_out}x{w_out}")
        self._emit_connection(lay, i, what, loops, acc, zdecl, input_only, c_out * h_out * w_out, h_out)

    def _layer_dense(self, lay: Layer, i: int) -> None:
        acc, zdecl, input_only, update = self._connection_common(lay, i)
        w = self._weight_array
        c_out = self.shapes[lay.name][0]
        if self.shapes[lay.name][1:] != (1, 1):
            raise SnncError(f"C backend: dense {lay.name}: output shape must be (C,), got {lay.shape}")
        c_in, h_in, w_in = self.shapes[lay.inputs[0]]
        feats = c_in * h_in * w_in
        if w.shape != (c_out, feats):
            raise SnncError(f"C backend: dense {lay.name}: weight {w.shape}, expected {(c_out, feats)}")
        self.param(f"w{i}", self.wtype, np.ascontiguousarray(w.T).astype(self.wnp))  # [feature (C,H,W)][co]
        loops = f"""        for (int p = 0; p < {h_in * w_in}; ++p)
          for (int ci = 0; ci < {c_in}; ++ci) {{
            const {self.src_t} v = in[p * {c_in} + ci];
            {acc} *restrict zp = z;
            const {self.wtype} *restrict wp;
            if (v == 0) continue;
            wp = W + (ci * {h_in * w_in} + p) * {c_out};
            {update.format(n=c_out)}
          }}"""
        self._emit_connection(lay, i, f"dense {feats}->{c_out}", loops, acc, zdecl, input_only, c_out, None)

    # ---- files -----------------------------------------------------------------------------------------
    def _header(self, outputs, neuron_layers) -> str:
        c, h, w = self.shapes[self.net.input_layers[0].name]
        names = ", ".join(name for name, _ in outputs)
        return f"""/* snn_model.h: generated by snnc (C backend, generator v{GENERATOR_VERSION}); do not edit.
 *
 * Spiking network, {self.mode} mode, {len(self.net.layers)} layers, outputs: {_comment(names)}.
 * Usage:  snn_ctx *c = snn_init("weights.bin");   (NULL: see snn_last_error())
 *         for (t = 0; t < T; ++t) snn_step(c, x);  (x: SNN_INPUT_SIZE values, (C, H, W) order)
 *         snn_read_outputs(c, k, out);  snn_spike_counts(c, counts);  snn_reset(c);  snn_free(c);
 * Nothing is allocated after snn_init; a context is not thread safe, several contexts are independent.
 */
#ifndef SNN_MODEL_H
#define SNN_MODEL_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {{
#endif

#define SNN_FIXED_POINT {1 if self.fixed else 0}
#define SNN_RATE_ENCODING {1 if self.rate else 0}
#define SNN_WEIGHTS_EMBEDDED {1 if self.weights == "header" else 0}
#define SNN_INPUT_C {c}
#define SNN_INPUT_H {h}
#define SNN_INPUT_W {w}
#define SNN_INPUT_SIZE {c * h * w}u
#define SNN_NUM_OUTPUTS {len(outputs)}
#define SNN_NUM_NEURON_LAYERS {len(neuron_layers)}

/* Float-mode arithmetic type (also used for activations, membranes and weights in float mode). */
typedef {self.real} snn_real_t;
/* One input value per step: fixed point direct encoding, round(x / scale) as int32 (the host rounds);
 * rate encoding, a spike 0/1 (see snn_rate_encode); float mode, x itself. */
typedef {self.input_t} snn_input_t;
/* Raw output accumulator (sum over steps of a layer's output): int64 in fixed point, double in float mode. */
typedef {self.sum} snn_sum_t;
/* Element type of snn_run's input file. */
#define SNN_INPUT_FILE_T {self.input_file_t}
#define SNN_INPUT_FILE_BYTES sizeof(SNN_INPUT_FILE_T)

extern const char *const snn_output_names[];      /* network output layer names, SNN_NUM_OUTPUTS */
extern const int snn_output_shapes[][3];          /* (C, H, W) of each output; (C, 1, 1) for vectors */
extern const size_t snn_output_sizes[];           /* C * H * W of each output */
extern const char *const snn_neuron_layer_names[]; /* SNN_NUM_NEURON_LAYERS names, snn_spike_counts order */
extern const size_t snn_neuron_layer_sizes[];     /* neurons per layer */
extern const double snn_input_scale;              /* direct encoding: x_int = round(x / snn_input_scale) */

typedef struct snn_ctx snn_ctx;

/* Allocate a context and load the weights (path of weights.bin, NULL = "weights.bin"; ignored when the weights
 * are compiled in). Returns NULL on failure; snn_last_error() says why. The context starts reset. */
snn_ctx *snn_init(const char *weights_path);
const char *snn_last_error(void);
/* Membranes to their initial value; memory IF counts, spike counts and output sums to 0; step counter 0. */
void snn_reset(snn_ctx *ctx);
/* One time step with input x (SNN_INPUT_SIZE values, (C, H, W) order). */
void snn_step(snn_ctx *ctx, const snn_input_t *x);
/* Steps run since the last reset. */
long snn_steps(const snn_ctx *ctx);
/* Output k decoded as the mean over the steps so far: sum_t out(t) * unit / t, (C, H, W) order, float64. */
void snn_read_outputs(const snn_ctx *ctx, int k, double *out);
/* Output k's raw sum over the steps so far (integer units in fixed point), (C, H, W) order. */
void snn_read_output_sums(const snn_ctx *ctx, int k, snn_sum_t *out);
/* Spikes (|s|, both signs) of each neuron layer since the last reset, SNN_NUM_NEURON_LAYERS values. */
void snn_spike_counts(const snn_ctx *ctx, int64_t *counts);
void snn_free(snn_ctx *ctx);
/* Direct encoding helper: x_int[i] = round_half_even((double)x[i] / snn_input_scale). The snnc simulators
 * round in numpy; for bit-exact agreement compute x / scale in the same precision as the host does. */
void snn_quantize_input(const double *x, int32_t *x_int, size_t n);

/* Rate encoding: numpy.random.default_rng(seed) bit for bit (SeedSequence + PCG64), so a C host reproduces
 * the Python simulators: each step, spikes[i] = rng.random() < x[i], drawn in (C, H, W) order. */
typedef struct {{ uint64_t state_hi, state_lo, inc_hi, inc_lo; }} snn_pcg64;
void snn_pcg64_seed(snn_pcg64 *rng, uint64_t seed);
uint64_t snn_pcg64_next(snn_pcg64 *rng);
double snn_pcg64_double(snn_pcg64 *rng);
void snn_pcg64_advance(snn_pcg64 *rng, uint64_t delta);
void snn_rate_encode(snn_pcg64 *rng, const double *x, snn_input_t *spikes, size_t n);

#ifdef __cplusplus
}}
#endif

#endif /* SNN_MODEL_H */
"""

    def _source(self, outputs, neuron_layers) -> tuple[str, str | None]:
        net = self.net
        in_name = net.input_layers[0].name
        ii = self.index[in_name]
        c, h, w = self.shapes[in_name]
        scale = float(net.input_encoding.get("scale", 1.0))
        header_mode = self.weights == "header"
        self.alloc("scratch_mem", "int64_t", self.scratch_elems)  # 8 bytes per element covers every acc type
        if self.scratch32_elems:
            self.alloc("scratch32", "int32_t", self.scratch32_elems)

        out_meta_names = ", ".join(_c_string(n) for n, _ in outputs)
        out_shapes = ", ".join("{%d, %d, %d}" % self.shapes[n] for n, _ in outputs)
        out_sizes = ", ".join(f"{int(np.prod(self.shapes[n]))}u" for n, _ in outputs)
        nl_names = ", ".join(_c_string(n) for n, _ in neuron_layers) or "0"
        nl_sizes = ", ".join(f"{s}u" for _, s in neuron_layers) or "0u"
        counts = "\n".join(f"    counts[{j}] = ctx->n{self.index[n]};" for j, (n, _) in enumerate(neuron_layers))
        accum = []
        for k, (name, _) in enumerate(outputs):
            n = int(np.prod(self.shapes[name]))
            accum.append(f"    for (int i = 0; i < {n}; ++i)\n        c->s{k}[i] += c->o{self.index[name]}[i];")
        out_cases = []
        for k, (name, _) in enumerate(outputs):
            oc, oh, ow = self.shapes[name]
            out_cases.append(f"    case {k}: S = ctx->s{k}; *u = ctx->u{k}; *C = {oc}; *HW = {oh * ow}; break;")
        param_names = ", ".join(_c_string(p.field) for p in self.params)
        param_nbytes = ", ".join(f"{p.array.nbytes}u" for p in self.params)

        fields = "\n    ".join(self.fields)
        allocs = "\n".join(
            f"    ctx->{f} = ({t} *)calloc({n}u, sizeof({t}));\n    if (ctx->{f} == NULL) goto oom;"
            for f, t, n in self.allocs)
        frees = "\n".join(f"    free(ctx->{f});" for f, _, _ in self.allocs)
        if header_mode:
            bind = "\n".join(f"    ctx->{p.field} = snn_p{j};" for j, p in enumerate(self.params))
            load = "    (void)weights_path;\n"
            blob_free = ""
            loader = ""
        else:
            bind = "\n".join(f"    ctx->{p.field} = (const {p.ctype} *)snn_blob_array(ctx->blob, {j});"
                             for j, p in enumerate(self.params))
            load = ("    ctx->blob = snn_load_blob(weights_path);\n"
                    "    if (ctx->blob == NULL) {\n        free(ctx);\n        return NULL;\n    }\n")
            blob_free = "    free(ctx->blob);\n"
            loader = runtime.LOADER_C
        input_copy = (f"""    {{
        int changed = c->t == 0;
        {self.otype[in_name]} *o = c->o{ii};
        for (int ch = 0; ch < {c}; ++ch)
            for (int p = 0; p < {h * w}; ++p) {{
                const {self.otype[in_name]} v = ({self.otype[in_name]})x[ch * {h * w} + p];
                if (o[p * {c} + ch] != v) {{
                    o[p * {c} + ch] = v;
                    changed = 1;
                }}
            }}
        c->input_changed = changed;
    }}""")
        # float compare for change detection is intentional: any bit change forces a recomputation
        funcs = "\n".join(self.funcs)
        clear_sums = "\n".join(f"    memset(c->s{k}, 0, {int(np.prod(self.shapes[n]))}u * sizeof *c->s{k});"
                               for k, (n, _) in enumerate(outputs))
        reset = "\n".join(self.reset_lines)
        weights_h = self._weights_header() if header_mode else None
        include_w = '#include "weights.h"\n' if header_mode else ""
        src = f"""/* snn_model.c: generated by snnc (C backend, generator v{GENERATOR_VERSION}); do not edit.
 * {self.mode} mode. Activations are stored channels-last (H, W, C); the API is channels-first (C, H, W).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "snn_model.h"
{include_w}
/* Built with OpenMP (-fopenmp), connection layers split their output rows over the threads and neuron
 * updates their positions; without it the same code runs in one thread. */
#ifdef _OPENMP
#include <omp.h>
#define SNN_THREADS omp_get_num_threads()
#define SNN_THREAD_ID omp_get_thread_num()
#else
#define SNN_THREADS 1
#define SNN_THREAD_ID 0
#endif
/* A neuron update's loop over channels as one vector loop: GCC does not vectorize it inside an OpenMP region
 * without this (measured: 1.3-1.45x faster steps on yolov3-tiny); the spike count is its only reduction. */
#if defined(_OPENMP) && _OPENMP >= 201307
#define SNN_SIMD_COUNT _Pragma("omp simd reduction(+:cnt)")
#else
#define SNN_SIMD_COUNT
#endif
#define SNN_SLICE(n, k, parts) ((int)((long)(n) * (k) / (parts)))
#define SNN_MAX(a, b) ((a) > (b) ? (a) : (b))
#define SNN_MIN(a, b) ((a) < (b) ? (a) : (b))

#define SNN_NUM_PARAMS {len(self.params)}u

static const char snn_layout_hash[33] = "@LAYOUT_HASH@";
static const char *const snn_param_names[] = {{{param_names}}};
static const uint64_t snn_param_nbytes[] = {{{param_nbytes}}};

const char *const snn_output_names[] = {{{out_meta_names}}};
const int snn_output_shapes[][3] = {{{out_shapes}}};
const size_t snn_output_sizes[] = {{{out_sizes}}};
const char *const snn_neuron_layer_names[] = {{{nl_names}}};
const size_t snn_neuron_layer_sizes[] = {{{nl_sizes}}};
const double snn_input_scale = {scale!r};

struct snn_ctx {{
    long t;
    int input_changed;
    unsigned char *blob;
    void *scratch;
    {fields}
}};
{runtime.ERROR_C}{loader}
{funcs}
void snn_reset(snn_ctx *c)
{{
    c->t = 0;
    c->input_changed = 1;
{reset}
{clear_sums}
}}

snn_ctx *snn_init(const char *weights_path)
{{
    snn_ctx *ctx = (snn_ctx *)calloc(1, sizeof(snn_ctx));
    if (ctx == NULL) {{
        snn_set_error("out of memory", "");
        return NULL;
    }}
    (void)snn_layout_hash;
    (void)snn_param_names;
    (void)snn_param_nbytes;
{load}{bind}
{allocs}
    ctx->scratch = ctx->scratch_mem;
    snn_reset(ctx);
    return ctx;
oom:
    snn_set_error("out of memory allocating the network state", "");
    snn_free(ctx);
    return NULL;
}}

void snn_free(snn_ctx *ctx)
{{
    if (ctx == NULL)
        return;
{frees}
{blob_free}    free(ctx);
}}

void snn_step(snn_ctx *c, const snn_input_t *x)
{{
{input_copy}
    {chr(10).join("    " + s for s in self.step_calls).strip()}
{chr(10).join(accum)}
    c->t += 1;
}}

long snn_steps(const snn_ctx *ctx)
{{
    return ctx->t;
}}

static const snn_sum_t *snn_output_sum(const snn_ctx *ctx, int k, const double **u, int *C, int *HW)
{{
    const snn_sum_t *S = NULL;
    switch (k) {{
{chr(10).join(out_cases)}
    default: *C = 0; *HW = 0; *u = NULL; break;
    }}
    return S;
}}

void snn_read_outputs(const snn_ctx *ctx, int k, double *out)
{{
    const double *u;
    int C, HW;
    const snn_sum_t *S = snn_output_sum(ctx, k, &u, &C, &HW);
    const double t = ctx->t > 0 ? (double)ctx->t : 1.0;
    for (int ch = 0; ch < C; ++ch)
        for (int p = 0; p < HW; ++p)
            out[ch * HW + p] = (double)S[p * C + ch] * u[ch] / t;
}}

void snn_read_output_sums(const snn_ctx *ctx, int k, snn_sum_t *out)
{{
    const double *u;
    int C, HW;
    const snn_sum_t *S = snn_output_sum(ctx, k, &u, &C, &HW);
    for (int ch = 0; ch < C; ++ch)
        for (int p = 0; p < HW; ++p)
            out[ch * HW + p] = S[p * C + ch];
}}

void snn_spike_counts(const snn_ctx *ctx, int64_t *counts)
{{
    (void)ctx;
    (void)counts;
{counts}
}}

void snn_quantize_input(const double *x, int32_t *x_int, size_t n)
{{
    size_t i;
    for (i = 0; i < n; ++i) {{
        const double v = x[i] / snn_input_scale, a = v < 0 ? -v : v;
        int64_t r = (int64_t)a;
        const double f = a - (double)r;
        if (f > 0.5 || (f == 0.5 && (r & 1)))
            ++r;
        x_int[i] = (int32_t)(v < 0 ? -r : r);
    }}
}}
{runtime.RNG_C}"""
        return src, weights_h

    def _weights_header(self) -> str:
        parts = ["/* weights.h: generated by snnc; the network's parameters, compiled in. */\n"]
        for j, p in enumerate(self.params):
            vals = p.array.reshape(-1)
            body = []
            for start in range(0, vals.size, 16):
                body.append("    " + ", ".join(_c_number(v, p.ctype) for v in vals[start:start + 16]) + ",")
            parts.append(f"/* {p.field} */\nstatic const {p.ctype} snn_p{j}[{vals.size}] = {{\n"
                         + "\n".join(body) + "\n};\n")
        return "\n".join(parts)

    def _blob(self, layout_hash: str) -> bytes:
        n = len(self.params)
        table, chunks = [], []
        off = 64 + 16 * n
        off = -(-off // BLOB_ALIGN) * BLOB_ALIGN
        for p in self.params:
            data = p.array.astype(p.array.dtype.newbyteorder("<"), copy=False).tobytes()
            table.append((off, len(data)))
            pad = (-len(data)) % BLOB_ALIGN
            chunks.append(data + b"\0" * pad)
            off += len(data) + pad
        head = BLOB_MAGIC + np.array([BLOB_VERSION, off], "<u8").tobytes() + layout_hash.encode()[:32]
        head += np.array([n], "<u8").tobytes() + np.array(table, "<u8").reshape(-1).tobytes()
        head += b"\0" * ((-len(head)) % BLOB_ALIGN)
        return head + b"".join(chunks)
