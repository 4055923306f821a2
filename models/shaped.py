"""LLaMA-shaped models with seeded random weights, for speed and memory benchmarks.

Speed and memory do not depend on trained values, so a model of a real model's shape with
random weights stands in for one this machine cannot download (its perplexity means nothing):

- ``llama-1b-shaped``: LLaMA-3.2-1B: hidden 2048, 16 layers, 32 query and 8 KV heads of 64,
  FFN 8192, vocabulary 128256, tied embeddings (1.24 B parameters);
- ``llama-3b-shaped``: LLaMA-3.2-3B: hidden 3072, 28 layers, 24 query and 8 KV heads of 128,
  FFN 8192, tied (3.21 B);
- ``llama-8b-shaped``: LLaMA-3.1-8B: hidden 4096, 32 layers, 32 query and 8 KV heads of 128,
  FFN 14336, untied (8.03 B); all with RoPE θ = 500000.

They are exported without ever holding their weights: ``transformers`` builds the model on
PyTorch's ``meta`` device (shapes, no storage; only the rotary embedding's frequencies are
real), the dynamo exporter writes its graph, and every weight becomes an ``onnx_ir``
``LazyTensor`` that draws its seeded values when it is written: saving streams them into the
external data one tensor at a time, so an 8B model (16 GB in fp16) is built in the memory of
its largest tensor. Weights are normal with standard deviation 0.02 (``transformers``'
``initializer_range``) from a generator seeded by the seed and the tensor's name; norm gains
are ones.
"""

from __future__ import annotations

import zlib

import numpy as np
import onnx_ir as ir
import onnxscript.optimizer
import torch
import transformers

from oqcompile.models.export import export_model

__all__ = ["SHAPED_CONFIGS", "export_shaped", "weightless_model"]

_LLAMA3 = dict(vocab_size=128256, rope_theta=500000.0, max_position_embeddings=131072, rms_norm_eps=1e-5,
               initializer_range=0.02)
SHAPED_CONFIGS: dict[str, transformers.PretrainedConfig] = {
    "llama-1b-shaped": transformers.LlamaConfig(
        hidden_size=2048, intermediate_size=8192, num_hidden_layers=16, num_attention_heads=32,
        num_key_value_heads=8, head_dim=64, tie_word_embeddings=True, **_LLAMA3),
    "llama-3b-shaped": transformers.LlamaConfig(
        hidden_size=3072, intermediate_size=8192, num_hidden_layers=28, num_attention_heads=24,
        num_key_value_heads=8, head_dim=128, tie_word_embeddings=True, **_LLAMA3),
    "llama-8b-shaped": transformers.LlamaConfig(
        hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32,
        num_key_value_heads=8, head_dim=128, tie_word_embeddings=False, **_LLAMA3),
}


def weightless_model(model_id: str, layers: int | None = None) -> transformers.PreTrainedModel:
    """``model_id`` (with ``layers`` decoder layers if given) on the meta device, rotary frequencies real."""
    config = SHAPED_CONFIGS[model_id]
    if layers is not None:
        config = transformers.LlamaConfig(**{**config.to_dict(), "num_hidden_layers": layers})
    with torch.device("meta"):
        model = transformers.AutoModelForCausalLM.from_config(config).eval()
    for module in model.modules():
        if isinstance(module, transformers.models.llama.modeling_llama.LlamaRotaryEmbedding):
            with torch.device("cpu"):
                module.__init__(config=config)
    return model


def export_shaped(model_id: str, *, dtype: str = "fp32", kv_cache: bool = False, layers: int | None = None,
                  seed: int = 0, optimize: bool = True) -> ir.Model:
    """Export ``model_id`` (see module doc) with seeded random weights drawn when saved."""
    model = export_model(weightless_model(model_id, layers), dtype=dtype, optimize=False, kv_cache=kv_cache)
    for value in model.graph.initializers.values():
        if _is_meta(value.const_value):
            value.const_value = _seeded_random(value.name, tuple(value.shape), value.dtype, seed)
    for node in list(model.graph):  # W stored [out, in] behind a Transpose: draw Wᵀ itself, nothing to fold
        weight = node.inputs[0] if node.op_type == "Transpose" and node.inputs else None
        if weight is not None and isinstance(weight.const_value, ir.LazyTensor) and len(weight.uses()) == 1:
            transposed = ir.Value(name=f"{weight.name}.T", shape=node.outputs[0].shape,
                                  type=ir.TensorType(weight.dtype))
            transposed.const_value = _seeded_random(weight.name, tuple(weight.shape)[::-1], weight.dtype, seed)
            model.graph.register_initializer(transposed)
            node.outputs[0].replace_all_uses_with(transposed)
            model.graph.remove(node, safe=True)
            model.graph.initializers.pop(weight.name)
    if optimize:  # the dynamo exporter's own optimizer, once every weight has values to fold
        onnxscript.optimizer.optimize_ir(model)
    return model


def _is_meta(tensor: ir.TensorProtocol | None) -> bool:
    raw = getattr(tensor, "raw", None)
    return isinstance(raw, torch.Tensor) and raw.device.type == "meta"


def _seeded_random(name: str, shape: tuple[int, ...], dtype: ir.DataType, seed: int) -> ir.LazyTensor:
    def draw() -> ir.Tensor:
        if "norm" in name and len(shape) == 1:
            return ir.tensor(np.ones(shape, dtype.numpy()), name=name)
        generator = np.random.default_rng([seed, zlib.crc32(name.encode())])
        return ir.tensor((0.02 * generator.standard_normal(shape, np.float32)).astype(dtype.numpy()), name=name)

    return ir.LazyTensor(draw, dtype, ir.Shape(shape), name=name)
