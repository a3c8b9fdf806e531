"""snnc's own Lava processes and CPU process models (imports lava). They live in their own folder because lava-nc
searches the folder of a process's module, executing each file there, for its process models."""

from .neurons import IF, MODELS, ConstantSource, Delay, FIXED_MSG, FIXED_STATE, Linear, Population, SignedIF

__all__ = ["IF", "SignedIF", "Linear", "Population", "ConstantSource", "Delay", "MODELS", "FIXED_MSG",
           "FIXED_STATE"]
