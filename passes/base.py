"""The common shape of an oqcompile pass: an in-place onnx_ir pass with recorded parameters."""

from __future__ import annotations

import dataclasses

import onnx_ir as ir

__all__ = ["TransformerPass"]


class TransformerPass(ir.passes.InPlacePass):
    """An in-place pass whose constructor arguments are its parameters.

    Subclasses are dataclasses; :meth:`params` returns their fields, which the recipe
    runner records in the model's ``metadata_props`` next to the pass name.
    """

    name: str = ""

    def params(self) -> dict:
        return dataclasses.asdict(self) if dataclasses.is_dataclass(self) else {}
