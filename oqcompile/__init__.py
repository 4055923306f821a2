"""oqcompile: a graph-level compiler that rotates and quantizes exported ONNX language models.

From Python: ``oqcompile.optimize(model_or_file, recipe, calibration=..., output=...)`` returns
the compiled ``onnx_ir`` model and what was done; ``oqcompile.compile_file(source, target,
recipe)`` is the file-to-file path the CLI takes (see :mod:`oqcompile.compiler`). Calibration
comes from ``oqcompile.calibration_data`` (the book) or ``oqcompile.text_calibration`` (a text
of one's own); ``oqcompile.describe`` is ``oqcompile inspect``. The command line is
:mod:`oqcompile.cli`.
"""

__version__ = "0.1.0"
__all__ = ["calibration_data", "compile_file", "describe", "optimize", "text_calibration"]

_HOMES = {"compile_file": "compiler", "optimize": "compiler", "calibration_data": "calibrate",
          "text_calibration": "calibrate", "describe": "inspection"}


def __getattr__(name: str):
    # Imported on first use: `import oqcompile` (and the CLI's start) stays light.
    if name in _HOMES:
        import importlib

        return getattr(importlib.import_module(f"oqcompile.{_HOMES[name]}"), name)
    raise AttributeError(f"module 'oqcompile' has no attribute {name!r}")
