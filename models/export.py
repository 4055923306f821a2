"""Export a ``transformers`` causal LM to ONNX: ``input_ids [batch, seq] -> logits``.

The dynamo exporter (``torch.onnx.export(dynamo=True)``) is the default; ``optimize``
toggles its ONNX optimizer, and ``legacy=True`` uses the TorchScript exporter instead.
Both are supported inputs of the structure analysis. The IR version is capped at what
the installed ONNX Runtime accepts (onnx may default to a newer one).
"""

from __future__ import annotations

import pathlib
import tempfile

import onnx_ir as ir
import torch

from oqcompile import modelio

__all__ = ["export_model"]

MAX_IR_VERSION = 10  # ORT >= 1.20 reads IR 10; newer onnx releases may write 11+.


def export_model(torch_model, *, dtype: str = "fp32", legacy: bool = False,
                 optimize: bool = True, opset: int = 20) -> ir.Model:
    """Export ``torch_model`` (``input_ids -> logits``, dynamic batch and sequence) to an ir.Model."""
    torch_model = torch_model.to(torch.float16 if dtype == "fp16" else torch.float32)
    torch_model.config.use_cache = False
    wrapper = _LogitsOnly(torch_model).eval()
    example = torch.zeros((2, 8), dtype=torch.int64)
    with torch.no_grad(), tempfile.TemporaryDirectory() as tmp:
        if legacy:
            path = pathlib.Path(tmp) / "model.onnx"
            torch.onnx.export(
                wrapper, (example,), str(path), dynamo=False, opset_version=min(opset, 18),
                input_names=["input_ids"], output_names=["logits"],
                dynamic_axes={"input_ids": {0: "batch", 1: "sequence"},
                              "logits": {0: "batch", 1: "sequence"}})
            model = modelio.load(path)
        else:
            batch, seq = torch.export.Dim("batch"), torch.export.Dim("sequence")
            program = torch.onnx.export(
                wrapper, (example,), dynamo=True, opset_version=opset, optimize=optimize,
                input_names=["input_ids"], output_names=["logits"],
                dynamic_shapes={"input_ids": {0: batch, 1: seq}}, verbose=False)
            model = program.model
    model.ir_version = min(model.ir_version, MAX_IR_VERSION)
    return model


class _LogitsOnly(torch.nn.Module):
    """Calls the HF model with ``input_ids`` only and returns the logits tensor."""

    def __init__(self, inner: torch.nn.Module):
        super().__init__()
        self.inner = inner

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        attention_mask = torch.ones_like(input_ids)  # skips the packed-sequence probe
        return self.inner(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).logits
