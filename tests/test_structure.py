"""The structure analysis finds the known module layout on every exporter setting."""

import numpy as np
import pytest

from conftest import FILE_EXPORTERS, LLAMA_FAMILIES
from oqcompile import modelio
from oqcompile.models.tiny import TINY_CONFIGS
from oqcompile.structure import StructureError, analyze


@pytest.mark.parametrize("exporter", FILE_EXPORTERS)
@pytest.mark.parametrize("model_id", [*LLAMA_FAMILIES, "tiny-gemma2"])
def test_roles_match_the_config(tiny_export, model_id, exporter):
    config = TINY_CONFIGS[model_id]
    t = analyze(modelio.load(tiny_export(model_id, exporter)))
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    assert len(t.blocks) == config.num_hidden_layers
    assert t.hidden_size == config.hidden_size
    assert t.lm_head.weight().shape == (config.hidden_size, config.vocab_size)
    for b in t.blocks:
        a = b.attention
        assert (a.num_heads, a.num_kv_heads, a.head_dim) == (
            config.num_attention_heads, config.num_key_value_heads, head_dim)
        assert a.q.weight().shape == (config.hidden_size, config.num_attention_heads * head_dim)
        assert a.k.weight().shape == (config.hidden_size, config.num_key_value_heads * head_dim)
        assert a.o.weight().shape == (config.num_attention_heads * head_dim, config.hidden_size)
        # TorchScript's Phi-3 cuts RoPE's part of each head and gate/up at bounds it computes from shapes
        assert a.q_rotary is not None and a.k_rotary is not None
        assert b.mlp.gate is not None
        assert b.mlp.up.weight().shape == (config.hidden_size, config.intermediate_size)
        assert b.mlp.down.weight().shape == (config.intermediate_size, config.hidden_size)
        assert (a.q.bias_slot is not None) == (model_id == "tiny-qwen2")
        assert b.attn_norm.kind == b.mlp_norm.kind == "rms"
        assert len(b.post_norms) == (2 if model_id == "tiny-gemma2" else 0)
        assert all(norm.gain() is not None for norm in (b.attn_norm, b.mlp_norm, *b.post_norms))


@pytest.mark.parametrize("exporter", FILE_EXPORTERS)
def test_opt_roles_match_the_config(tiny_export, exporter):
    config = TINY_CONFIGS["tiny-opt"]
    t = analyze(modelio.load(tiny_export("tiny-opt", exporter)))
    assert (len(t.blocks), t.hidden_size) == (config.num_hidden_layers, config.hidden_size)
    assert len(t.positional) == 1
    assert (t.lm_head.weight() == t.embedding.table().T).all()  # tied in the source (legacy copies it)
    for b in t.blocks:
        a = b.attention
        assert (a.num_heads, a.num_kv_heads, a.head_dim) == (4, 4, 16)
        assert a.q_rotary is None and b.mlp.gate is None
        assert b.mlp.up.weight().shape == (config.hidden_size, config.ffn_dim)
        assert all(lin.bias_slot is not None for lin in (a.q, a.k, a.v, a.o, b.mlp.up, b.mlp.down))
        assert b.attn_norm.kind == b.mlp_norm.kind == "layer" and b.attn_norm.bias() is not None


def test_gate_and_up_are_not_swapped(tiny_export):
    from oqcompile.models import load_torch_model

    torch_model = load_torch_model("tiny-llama")
    t = analyze(modelio.load(tiny_export("tiny-llama")))
    gate = torch_model.model.layers[1].mlp.gate_proj.weight.detach().numpy().T
    up = torch_model.model.layers[1].mlp.up_proj.weight.detach().numpy().T
    assert (t.blocks[1].mlp.gate.weight() == gate).all()
    assert (t.blocks[1].mlp.up.weight() == up).all()


@pytest.mark.real_model
def test_smollm2_map(smollm2_onnx):
    s = analyze(modelio.load(smollm2_onnx)).summary()
    assert (s["num_blocks"], s["hidden_size"], s["intermediate_size"]) == (30, 576, 1536)
    assert (s["num_heads"], s["num_kv_heads"], s["head_dim"], s["vocab_size"]) == (9, 3, 64, 49152)
    assert s["tied_embeddings"] and s["rope"] and s["gated_mlp"]


def test_non_transformer_graph_is_refused(tmp_path):
    import numpy as np
    import onnx_ir as ir

    x = ir.Value(name="x", shape=ir.Shape([2, 4]), type=ir.TensorType(ir.DataType.FLOAT))
    w = ir.Value(name="w", const_value=ir.tensor(np.ones((4, 4), np.float32)))
    node = ir.node("MatMul", [x, w])
    graph = ir.Graph([x], node.outputs, nodes=[node], initializers=[w], opset_imports={"": 20})
    with pytest.raises(StructureError, match="no token embedding"):
        analyze(ir.Model(graph, ir_version=10))


def test_packed_phi3_projections_are_column_ranges(tiny_export):
    from oqcompile.models import load_torch_model

    layer = load_torch_model("tiny-phi3").model.layers[1]
    t = analyze(modelio.load(tiny_export("tiny-phi3")))
    a, mlp = t.blocks[1].attention, t.blocks[1].mlp
    assert a.packed is not None and a.readers == [a.packed] and mlp.readers == [mlp.packed]
    qkv = layer.self_attn.qkv_proj.weight.detach().numpy().T
    assert np.array_equal(np.concatenate([a.q.weight(), a.k.weight(), a.v.weight()], axis=1), qkv)
    gate_up = layer.mlp.gate_up_proj.weight.detach().numpy().T
    assert np.array_equal(np.concatenate([mlp.gate.weight(), mlp.up.weight()], axis=1), gate_up)
    assert a.q_rotary is not None and a.k.output is not a.v.output
