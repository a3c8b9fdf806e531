"""C backend: generates a self-contained C99 project from a `Network` (`generate`) and simulates by compiling
and running it (`CBackend`, registered as "c"). See docs/backend_c.md."""

from snnc.backends.c.backend import CBackend, build, find_compiler
from snnc.backends.c.generate import GENERATOR_VERSION, Project, generate, render

__all__ = ["CBackend", "GENERATOR_VERSION", "Project", "build", "find_compiler", "generate", "render"]
