"""oqcompile: a graph-level compiler that rotates and quantizes exported ONNX language models.

``oqcompile.compile_file(source, target, recipe, ...)`` compiles one ONNX file (see
:mod:`oqcompile.compiler`); the command line is :mod:`oqcompile.cli`.
"""

__version__ = "0.1.0"
__all__ = ["compile_file"]


def __getattr__(name: str):
    # Imported on first use: `import oqcompile` (and the CLI's start) stays light.
    if name == "compile_file":
        from oqcompile.compiler import compile_file

        return compile_file
    raise AttributeError(f"module 'oqcompile' has no attribute {name!r}")
