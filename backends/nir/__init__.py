"""NIR export: the Network as a graph of NIR primitives (docs/nir.md), for snnTorch, Norse, sinabs, Lava-DL,
Rockpool and hardware toolchains. Like the C generator it lowers from the Network; it needs the optional
`nir` package (`pip install snnc[nir]`), imported only when an export runs."""

from snnc.backends.nir.export import to_nir, write_nir

__all__ = ["to_nir", "write_nir"]
