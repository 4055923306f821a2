"""oqcompile: a graph-level compiler that rotates and quantizes exported ONNX language models."""

__version__ = "0.1.0"
