"""Built-in passes, one module each; importing this package registers them (see `snnc passes`)."""

from snnc.passes import (  # noqa: F401
    activations_to_neurons,
    calibrate_to_T,
    channel_norm,
    channel_slice,
    fold_batchnorm,
    fold_linear,
    maxpool_to_strided_conv,
    residual_add,
    split_leaky_relu,
    upsample_to_deconv,
)
