"""snnc's own Lava processes and CPU process models (imports lava). They live in their own folder because lava-nc
searches the folder of a process's module, executing each file there, for its process models.

neurons.py: the ConstantSource, Delay, Linear, IF, MemoryIF, SignedIF and SignedMemoryIF processes and their float / fixed-point models.
countpool.py: the CountMaxPool process (the count max-pool, --maxpool count) and its models.
graded.py: the GradedSignedMemoryIF process (--leaky graded) and its models.
conv.py: process models for lava-nc's own Conv process (lava's models break on 128+ groups and are slow).
"""

from snnc.backends.lava.processes.graded import GradedSignedMemoryIF
from snnc.backends.lava.processes.conv import ConvModelFixed, ConvModelFloat, lava_conv
from snnc.backends.lava.processes.neurons import (IF, MODELS, ConstantSource, Delay, FIXED_MSG, FIXED_STATE, Linear, MemoryIF, Population,
                      SignedIF, SignedMemoryIF)
from snnc.backends.lava.processes.countpool import MODELS as _POOL_MODELS, CountMaxPool

MODELS.update(_POOL_MODELS)

__all__ = ["GradedSignedMemoryIF", "IF", "MemoryIF", "SignedIF", "SignedMemoryIF", "Linear", "Population", "ConstantSource", "Delay", "MODELS", "FIXED_MSG",
           "FIXED_STATE", "ConvModelFixed", "ConvModelFloat", "lava_conv"]
__all__ += ["CountMaxPool"]
