"""LLaMA-shaped models with seeded random weights, for speed and memory benchmarks.

Speed and memory do not depend on trained values, so a model of a real model's shape with
random weights stands in for one this machine cannot download (its perplexity means nothing):

- ``llama-1b-shaped``: LLaMA-3.2-1B's shape: hidden 2048, 16 layers, 32 query and 8 KV heads
  of 64, FFN 8192, vocabulary 128256, tied embeddings, RoPE θ = 500000 (1.24 B parameters).
"""

from __future__ import annotations

import torch
import transformers

__all__ = ["SHAPED_CONFIGS", "build_shaped"]

SHAPED_CONFIGS: dict[str, transformers.PretrainedConfig] = {
    "llama-1b-shaped": transformers.LlamaConfig(
        hidden_size=2048, intermediate_size=8192, num_hidden_layers=16, num_attention_heads=32,
        num_key_value_heads=8, head_dim=64, vocab_size=128256, tie_word_embeddings=True, rope_theta=500000.0,
        max_position_embeddings=131072, rms_norm_eps=1e-5, initializer_range=0.02),
}


def build_shaped(model_id: str, seed: int = 0) -> transformers.PreTrainedModel:
    """Build ``model_id`` with seeded random weights (``transformers``' own initialization)."""
    torch.manual_seed(seed)
    return transformers.AutoModelForCausalLM.from_config(SHAPED_CONFIGS[model_id]).eval()
