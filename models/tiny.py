"""Tiny seeded random models of each supported family, for tests.

Sizes are chosen so the rotation passes meet every Hadamard shape class: powers of two
and ``K * 2^k`` with K in {12, 20, 28, 36, 40}. Norm gains and biases are drawn at random
(not ones and zeros) so that a folding bug changes the logits.
"""

from __future__ import annotations

import torch
import transformers

__all__ = ["TINY_CONFIGS", "build_tiny"]

_COMMON = dict(vocab_size=256, max_position_embeddings=256, initializer_range=0.08)

TINY_CONFIGS: dict[str, transformers.PretrainedConfig] = {
    # hidden 64 = 2^6, FFN 96 = 12*8, GQA 4 query / 2 KV heads.
    "tiny-llama": transformers.LlamaConfig(
        hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, tie_word_embeddings=False, **_COMMON),
    # hidden 80 = 20*4 (5 heads of 16), FFN 160 = 20*8, one KV head.
    "tiny-mistral": transformers.MistralConfig(
        hidden_size=80, intermediate_size=160, num_hidden_layers=2, num_attention_heads=5,
        num_key_value_heads=1, head_dim=16, sliding_window=None, tie_word_embeddings=True,
        **_COMMON),
    # hidden 112 = 28*4 (7 heads of 16), FFN 144 = 36*4, q/k/v biases.
    "tiny-qwen2": transformers.Qwen2Config(
        hidden_size=112, intermediate_size=144, num_hidden_layers=2, num_attention_heads=7,
        num_key_value_heads=7, tie_word_embeddings=True, **_COMMON),
    # Packed projections (qkv_proj, gate_up_proj) as Phi-3 has them; hidden 96 = 12*8 (3 heads of 32, one KV
    # head), FFN 160. RoPE on half of each head, as Phi-4-mini has it on 3/4 (16 channels: ORT's
    # GroupQueryAttention needs a multiple of 16); no LongRoPE (its trained context is its whole context).
    "tiny-phi3": transformers.Phi3Config(
        hidden_size=96, intermediate_size=160, num_hidden_layers=2, num_attention_heads=3,
        num_key_value_heads=1, tie_word_embeddings=False, pad_token_id=0, bos_token_id=1, eos_token_id=2,
        original_max_position_embeddings=_COMMON["max_position_embeddings"], partial_rotary_factor=0.5, **_COMMON),
    # Post-norm blocks (a norm on each sub-layer's output before the residual add), tanh soft-capping.
    "tiny-gemma2": transformers.Gemma2Config(
        hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, head_dim=16, sliding_window=256, tie_word_embeddings=True, pad_token_id=0,
        bos_token_id=1, eos_token_id=2, **_COMMON),
    # LayerNorm with bias, ReLU, learned positions; hidden 64, FFN 320 = 40*8.
    "tiny-opt": transformers.OPTConfig(
        hidden_size=64, ffn_dim=320, num_hidden_layers=2, num_attention_heads=4,
        word_embed_proj_dim=64, do_layer_norm_before=True, activation_function="relu",
        vocab_size=256, max_position_embeddings=256, init_std=0.08, dropout=0.0,
        attention_dropout=0.0, tie_word_embeddings=True),
}


def build_tiny(model_id: str, seed: int = 0) -> transformers.PreTrainedModel:
    """Build the tiny model ``model_id`` with seeded random weights, norms and biases."""
    config = TINY_CONFIGS[model_id]
    torch.manual_seed(seed)
    model = transformers.AutoModelForCausalLM.from_config(config)
    generator = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for name, param in model.named_parameters():
            is_norm = "norm" in name or "layer_norm" in name
            if is_norm and name.endswith("weight"):
                param.copy_(0.5 + torch.rand(param.shape, generator=generator))
            elif name.endswith("bias"):
                param.copy_(0.1 * torch.randn(param.shape, generator=generator))
    return model.eval()
