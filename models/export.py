"""Export a ``transformers`` causal LM to ONNX.

Two graph signatures:

- default: ``input_ids [batch, sequence] -> logits [batch, sequence, vocab]`` (the full
  sequence at once; what calibration and perplexity use);
- ``kv_cache=True``: ``input_ids, attention_mask [batch, past + sequence],
  past_key_values.{i}.key/value [batch, kv_heads, past, head_dim] -> logits,
  present.{i}.key/value [batch, kv_heads, past + sequence, head_dim]``, the usual decoder
  signature of ORT deployments (prefill with ``past = 0``, then one token at a time).

The dynamo exporter (``torch.onnx.export(dynamo=True)``) is the default; ``optimize``
toggles its ONNX optimizer, and ``legacy=True`` uses the TorchScript exporter instead.
All are supported inputs of the structure analysis. The IR version is capped at what the
installed ONNX Runtime accepts (onnx may default to a newer one).
"""

from __future__ import annotations

import pathlib
import tempfile

import onnx_ir as ir
import torch

from oqcompile import modelio
from oqcompile.errors import OQError

__all__ = ["export_model", "export_to_file"]

MAX_IR_VERSION = 10  # ORT >= 1.20 reads IR 10; newer onnx releases may write 11+.


def export_model(torch_model, *, dtype: str = "fp32", legacy: bool = False,
                 optimize: bool = True, opset: int = 20, kv_cache: bool = False) -> ir.Model:
    """Export ``torch_model`` with dynamic batch and sequence to an ir.Model (see module doc)."""
    torch_model = torch_model.to(torch.float16 if dtype == "fp16" else torch.float32)
    if kv_cache:
        if legacy:
            raise OQError("--kv-cache needs the dynamo exporter")
        model = _export_with_cache(torch_model, opset, optimize)
    else:
        model = _export_logits(torch_model, opset, optimize, legacy)
    model.ir_version = min(model.ir_version, MAX_IR_VERSION)
    return model


def export_to_file(model_id: str, path, *, exporter: str = "dynamo", dtype: str = "fp32",
                   kv_cache: bool = False, opset: int = 20, progress: bool = False):
    """Export the registered model (or local HF directory) ``model_id`` to ``path``.

    ``exporter="genai"`` runs the ONNX Runtime GenAI model builder instead of ``torch.onnx``
    (:mod:`oqcompile.models.genai`; ``dtype`` fp32 or int4), ``exporter="optimum"`` Hugging Face
    Optimum's exporter (:mod:`oqcompile.models.optimum`; ``kv_cache``: its decoder with past). ``opset``: the ONNX opset of
    ``torch.onnx`` (at 23 the dynamo exporter writes attention, RoPE and RMS norms as the ONNX
    ``Attention``, ``RotaryEmbedding`` and ``RMSNormalization`` ops). The file records
    ``oq.source_model = model_id`` (eval and calibration find the
    tokenizer by it). The file appears only once ONNX Runtime loads it
    (:func:`oqcompile.evaluate.check_loads`). ``progress``: a bar over the steps (load, export,
    write). Returns the written path.
    """
    from tqdm import tqdm

    from oqcompile.evaluate import check_loads
    from oqcompile.models import load_torch_model
    from oqcompile.models.shaped import SHAPED_CONFIGS, export_shaped

    modelio.check_writable(path)
    if exporter == "genai":
        from oqcompile.models.genai import export_genai

        return export_genai(model_id, path, dtype, progress)
    if dtype not in ("fp32", "fp16"):
        raise OQError(f"the {exporter} exporter writes fp32 or fp16, not {dtype} (int4: --exporter genai)")
    if exporter == "optimum":
        from oqcompile.models.optimum import export_optimum

        return export_optimum(model_id, path, dtype, kv_cache, progress)
    if model_id in SHAPED_CONFIGS and exporter == "legacy":
        raise OQError(f"{model_id} is exported from a weightless model: use a dynamo exporter")
    with tqdm(total=3, desc=f"export {model_id}", unit="step", disable=not progress) as bar:
        bar.set_postfix_str("loading")
        if model_id in SHAPED_CONFIGS:  # loads nothing: weights are drawn as they are written
            bar.update()
            bar.set_postfix_str("exporting")
            model = export_shaped(model_id, dtype=dtype, kv_cache=kv_cache, optimize=exporter == "dynamo")
        else:
            torch_model = load_torch_model(model_id)
            bar.update()
            bar.set_postfix_str("exporting")
            model = export_model(torch_model, dtype=dtype, legacy=exporter == "legacy",
                                 optimize=exporter == "dynamo", kv_cache=kv_cache, opset=opset)
        bar.update()
        bar.set_postfix_str("writing")
        model.metadata_props["oq.source_model"] = model_id
        written = modelio.save(model, path, check=lambda staged: check_loads(staged, path))
        bar.update()
    return written


def _export_logits(torch_model, opset: int, optimize: bool, legacy: bool) -> ir.Model:
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
            return modelio.load(path)
        batch, seq = torch.export.Dim("batch"), torch.export.Dim("sequence")
        program = torch.onnx.export(
            wrapper, (example,), dynamo=True, opset_version=opset, optimize=optimize,
            input_names=["input_ids"], output_names=["logits"],
            dynamic_shapes={"input_ids": {0: batch, 1: seq}}, verbose=False)
        return program.model


def _export_with_cache(torch_model, opset: int, optimize: bool) -> ir.Model:
    config = torch_model.config
    layers = config.num_hidden_layers
    kv_heads = getattr(config, "num_key_value_heads", None) or config.num_attention_heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    dtype = next(torch_model.parameters()).dtype
    wrapper = _WithCache(torch_model).eval()
    batch, seq, past = 2, 8, 3
    example = (torch.zeros((batch, seq), dtype=torch.int64),
               torch.ones((batch, past + seq), dtype=torch.int64),
               *[torch.zeros((batch, kv_heads, past, head_dim), dtype=dtype) for _ in range(2 * layers)])
    cache_names = [f"{i}.{part}" for i in range(layers) for part in ("key", "value")]
    batch_dim, seq_dim = torch.export.Dim("batch"), torch.export.Dim("sequence")
    past_dim, total_dim = torch.export.Dim("past_sequence"), torch.export.Dim("total_sequence")
    with torch.no_grad():
        program = torch.onnx.export(
            wrapper, example, dynamo=True, opset_version=opset, optimize=optimize,
            input_names=["input_ids", "attention_mask", *[f"past_key_values.{n}" for n in cache_names]],
            output_names=["logits", *[f"present.{n}" for n in cache_names]],
            dynamic_shapes={"input_ids": {0: batch_dim, 1: seq_dim},
                            "attention_mask": {0: batch_dim, 1: total_dim},
                            "past": tuple({0: batch_dim, 2: past_dim} for _ in range(2 * layers))},
            verbose=False)
    return program.model


class _LogitsOnly(torch.nn.Module):
    """Calls the HF model with ``input_ids`` only and returns the logits tensor."""

    def __init__(self, inner: torch.nn.Module):
        super().__init__()
        self.inner = inner

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        attention_mask = torch.ones_like(input_ids)  # skips the packed-sequence probe
        return self.inner(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).logits


class _WithCache(torch.nn.Module):
    """Flat tensors in and out: ``(input_ids, attention_mask, k0, v0, k1, ...) -> (logits, k0', ...)``."""

    def __init__(self, inner: torch.nn.Module):
        super().__init__()
        self.inner = inner

    def forward(self, input_ids, attention_mask, *past):
        from transformers import DynamicCache

        cache = DynamicCache(config=self.inner.config)
        for layer in range(len(past) // 2):
            cache.update(past[2 * layer], past[2 * layer + 1], layer)
        out = self.inner(input_ids=input_ids, attention_mask=attention_mask, past_key_values=cache,
                         use_cache=True)
        present = [t for layer in out.past_key_values.layers for t in (layer.keys, layer.values)]
        return (out.logits, *present)
