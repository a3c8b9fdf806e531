"""CPU process models for lava-nc's own Conv process (`lava.proc.conv.process.Conv`), picked by `SnncSimCfg`.

The process, its ports and its Vars are lava's; only the model that computes a step is ours, because lava-nc
0.10.0's two Conv models cannot run yolov3-tiny (both checked in tests/test_lava_backend.py):

- they declare `groups` (and kernel_size, stride, padding, dilation) as int8 Vars, so a grouped convolution with
  128 groups runs with groups = -128 and one with 256 groups divides by zero (the max-pool trees of
  yolov3-tiny are depthwise convolutions with up to 512 groups);
- `utils.conv_scipy` calls `scipy.signal.convolve2d` once per (output, input) channel pair: 1.5 M calls a step
  for yolov3-tiny's 1024 x 1536 layer, about 30 s per step even at 32 x 32 input.

The semantics are exactly those of lava's models (`utils.conv`): a true convolution (the kernel flipped, which
the plan compensates for), symmetric padding per axis, stride, dilation, groups, input (X, Y, C), weights
(C_out, KX, KY, C_in / groups), output (X', Y', C_out); one step of delay (a_out sends the previous step's sum);
`num_message_bits == 0` casts the input to bool. The computation is one im2col matrix product per group in
float64, which is exact for integer inputs and weights while every partial sum stays below 2**53 (the plan
checks a bound on |a_out|). The fixed-point model keeps lava's 24-bit wrap (`utils.signed_clamp`) and int32
messages; its weights are held as float64 integers so the product needs no conversion per step.
"""

from __future__ import annotations

import numpy as np
from lava.magma.core.decorator import implements, requires, tag
from lava.magma.core.model.py.model import PyLoihiProcessModel
from lava.magma.core.model.py.ports import PyInPort, PyOutPort
from lava.magma.core.model.py.type import LavaPyType
from lava.magma.core.resources import CPU
from lava.magma.core.sync.protocols.loihi_protocol import LoihiProtocol
from lava.proc.conv import utils
from lava.proc.conv.process import Conv

ACC_BITS = 24  # lava's fixed-point Conv wraps its output to 24 bits


def lava_conv(x: np.ndarray, weight: np.ndarray, stride, padding, dilation, groups: int) -> np.ndarray:
    """lava.proc.conv.utils.conv's result (a true convolution), as float64 im2col products, one per group."""
    x = np.asarray(x, dtype=np.float64)
    c_out, kx, ky, cin_g = weight.shape
    (sx, sy), (px, py), (dx, dy) = stride, padding, dilation
    g = int(groups)
    xp = np.pad(x, ((px, px), (py, py), (0, 0))) if px or py else x
    win = np.lib.stride_tricks.sliding_window_view(xp, (dx * (kx - 1) + 1, dy * (ky - 1) + 1), axis=(0, 1))
    # (X', Y', C, KX, KY); flipping the window pairs window offset i with kernel index KX - 1 - i (convolution)
    win = win[::sx, ::sy, :, ::-dx, ::-dy]
    xo, yo = win.shape[:2]
    cols = win.reshape(xo, yo, g, cin_g, kx, ky).transpose(2, 0, 1, 4, 5, 3).reshape(g, xo * yo, kx * ky * cin_g)
    w = np.asarray(weight, dtype=np.float64).reshape(g, c_out // g, kx * ky * cin_g)
    out = np.matmul(cols, w.transpose(0, 2, 1))  # (G, P, C_out / G)
    return out.transpose(1, 0, 2).reshape(xo, yo, c_out)


class _ConvModel(PyLoihiProcessModel):
    """lava's AbstractPyConvModel.run_spk with int64 parameters and `lava_conv`."""

    kernel_size: np.ndarray = LavaPyType(np.ndarray, np.int64)
    stride: np.ndarray = LavaPyType(np.ndarray, np.int64)
    padding: np.ndarray = LavaPyType(np.ndarray, np.int64)
    dilation: np.ndarray = LavaPyType(np.ndarray, np.int64)
    groups: np.ndarray = LavaPyType(np.ndarray, np.int64)
    num_message_bits: np.ndarray = LavaPyType(np.ndarray, np.int64)
    weight_exp: np.ndarray = LavaPyType(np.ndarray, np.int64)
    num_weight_bits: np.ndarray = LavaPyType(np.ndarray, np.int64)
    weight: np.ndarray = LavaPyType(np.ndarray, float)

    def run_spk(self) -> None:
        self.a_out.send(self.a_buf)
        s_in = self.s_in.recv()
        if self.num_message_bits.item() == 0:
            s_in = s_in.astype(bool)
        a = lava_conv(s_in, self.weight, self.stride, self.padding, self.dilation, int(self.groups[0]))
        self.a_buf = self.clamp(a)

    def clamp(self, a: np.ndarray) -> np.ndarray:
        return a


@implements(proc=Conv, protocol=LoihiProtocol)
@requires(CPU)
@tag("floating_pt")
class ConvModelFloat(_ConvModel):
    """float64 sums (also exact integer sums in fixed-point mode where they exceed 24 bits)."""

    s_in: PyInPort = LavaPyType(PyInPort.VEC_DENSE, float, precision=24)
    a_out: PyOutPort = LavaPyType(PyOutPort.VEC_DENSE, float)
    a_buf: np.ndarray = LavaPyType(np.ndarray, float)


@implements(proc=Conv, protocol=LoihiProtocol)
@requires(CPU)
@tag("fixed_pt")
class ConvModelFixed(_ConvModel):
    """Integer sums wrapped to 24 bits and sent as int32, as lava's PyConvModelFixed."""

    s_in: PyInPort = LavaPyType(PyInPort.VEC_DENSE, np.int32, precision=24)
    a_out: PyOutPort = LavaPyType(PyOutPort.VEC_DENSE, np.int32, precision=24)
    a_buf: np.ndarray = LavaPyType(np.ndarray, np.int32, precision=24)

    def clamp(self, a: np.ndarray) -> np.ndarray:
        return utils.signed_clamp(np.rint(a).astype(np.int64), bits=ACC_BITS).astype(np.int32)
