"""The count max-pool (`maxpool` layers, `--maxpool count`) in the Lava plan (no lava import).

A `maxpool` layer becomes one population of kind "CountMaxPool" (processes/countpool.py) that keeps, per input,
the running sum S of what it received and, per output, the window max M of those sums, and sends
out(t) = M(t) - M(t-1): the recurrence of snnc.ir.countpool. Its input arrives like any population's, through
one lava Sparse per route into the pool's input layer (0/1 weights: the identity, an edge or zero pad, a channel
slice of a concat), so the pool is one synapse stage deeper than its sources (depth = 1 + the deepest source,
one step of delay like every connection) and the usual depth alignment holds: the pool at depth d sees the
NumPy reference's step k at Lava step d + k. A routing layer: units and integers pass through unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from snnc.ir.network import Layer

from snnc.backends.lava.plan import ConnSpec, PopSpec, Route, _route_matrix, lava_shape, message_bits

KIND = "CountMaxPool"


@dataclass
class PoolSpec(PopSpec):
    in_shape: tuple[int, ...] = ()  # Lava layout (W, H, C) of the pool's input layer: the shape of a_in
    kernel: tuple[int, int] = (1, 1)  # Lava order (kx, ky)
    strides: tuple[int, int] = (1, 1)  # Lava order (sx, sy)


def plan_pool(layer: Layer, src_routes: list[Route], pops: dict[str, PopSpec], chw: dict[str, tuple[int, ...]],
              in_chw: tuple[int, ...], unit: np.ndarray) -> tuple[PoolSpec, list[ConnSpec]]:
    """The pool's population and its routing connections (one Sparse per route into its input layer)."""
    name = layer.name
    depth = 1 + max(pops[r.pop].depth for r in src_routes)
    conns = []
    for k, r in enumerate(src_routes):
        spop = pops[r.pop]
        m = _route_matrix(r, chw[r.pop], in_chw).tocsr()
        conns.append(ConnSpec(f"{name}.{k}" if len(src_routes) > 1 else name, name, r.pop, "sparse",
                              depth - 1 - spop.depth, m, {}, message_bits(spop), max(1, spop.max_out), int(m.nnz),
                              constant=spop.kind == "source"))
    kh, kw = (int(v) for v in layer.attrs["kernel_shape"])
    sh, sw = (int(v) for v in layer.attrs["strides"])
    # |M(t) - M(t-1)| <= the largest |input| of one step: the sources' bound
    max_out = max(pops[r.pop].max_out for r in src_routes)
    spec = PoolSpec(name, KIND, lava_shape(layer.shape), depth, unit=unit, max_out=max_out,
                    in_shape=lava_shape(in_chw), kernel=(kw, kh), strides=(sw, sh))
    return spec, conns
