"""Model sources: the registered model ids, how each is obtained offline, and ONNX export.

Registered ids: ``smollm2-135m`` (the default real model), the tiny seeded random
models ``tiny-llama``, ``tiny-mistral``, ``tiny-qwen2``, ``tiny-phi3``, ``tiny-gemma2`` and ``tiny-opt``, and
``llama-1b-shaped``, ``llama-3b-shaped`` and ``llama-8b-shaped`` (LLaMA-3 shapes with seeded
random weights, for speed and memory benchmarks; exported without ever holding their weights,
:mod:`oqcompile.models.shaped`). Any local Hugging Face model directory is accepted wherever an
id is.
"""

from __future__ import annotations

import pathlib

from oqcompile.errors import OQError

__all__ = ["DEFAULT_MODEL", "EXPORTERS", "MODEL_IDS", "TORCH_EXPORTERS", "load_torch_model", "load_tokenizer"]

DEFAULT_MODEL = "smollm2-135m"
MODEL_IDS = (DEFAULT_MODEL, "tiny-llama", "tiny-mistral", "tiny-qwen2", "tiny-phi3", "tiny-gemma2", "tiny-opt",
             "llama-1b-shaped", "llama-3b-shaped", "llama-8b-shaped")
# torch.onnx.export: dynamo with/without its optimizer, TorchScript
TORCH_EXPORTERS = ("dynamo", "dynamo-noopt", "legacy")
EXPORTERS = (*TORCH_EXPORTERS, "genai", "optimum")  # and the ONNX Runtime GenAI model builder, Hugging Face Optimum


def load_torch_model(model: str):
    """Return the float32 ``transformers`` causal LM for a registered id or a local HF directory."""
    import transformers

    from oqcompile.models import shaped, smollm2, tiny

    if model == DEFAULT_MODEL:
        return smollm2.load_model()
    if model in tiny.TINY_CONFIGS:
        return tiny.build_tiny(model)
    if model in shaped.SHAPED_CONFIGS:
        raise OQError(f"{model} has no PyTorch weights: `oqcompile export` writes it with random ones")
    if pathlib.Path(model).is_dir():
        transformers.logging.set_verbosity_error()
        return transformers.AutoModelForCausalLM.from_pretrained(model).eval()
    raise OQError(f"unknown model {model!r}: give one of {', '.join(MODEL_IDS)} or a local "
                  "Hugging Face model directory")


def load_tokenizer(model: str):
    """Return the tokenizer of a registered id or a local HF directory (tiny models have none)."""
    import transformers

    from oqcompile.models import smollm2

    if model == DEFAULT_MODEL:
        return smollm2.load_tokenizer()
    if pathlib.Path(model).is_dir():
        return transformers.AutoTokenizer.from_pretrained(model)
    raise OQError(f"no tokenizer for {model!r}: give --tokenizer {DEFAULT_MODEL} or a local "
                  "Hugging Face model directory")
