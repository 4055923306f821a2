"""Graphs written by the ONNX Runtime GenAI model builder: mapped, rotated exactly, quantized, lowered.

The builder fuses the residual add into ``SkipSimplifiedLayerNormalization``, packs q/k/v into one
projection feeding ``GroupQueryAttention`` (RoPE inside), reads a tied embedding as the transpose of
the lm_head weight and names the cache's head size. Bounds: docs/RESULTS.md section "tiny-errors"
(split alone 5.8e-7 and rotate at most 1.4e-6 against the export; quarot-w8a8 0.0249 / 0.0314 /
0.0344 / 0.0390 / 0.0365 against it on tiny-llama / tiny-mistral / tiny-qwen2 / tiny-phi3 / tiny-gemma2).
The builder's Gemma 2 alternates sliding-window layers (``local_window_size``), which ORT runs only
over a past buffer at least as long as the window (:func:`oqcompile.evaluate.cache_dims`).
"""

import json

import numpy as np
import pytest

from conftest import relative_error, run_logits
from oqcompile import compile_file, modelio
from oqcompile.calibrate import CalibrationData
from oqcompile.cli import main
from oqcompile.errors import OQError
from oqcompile.models.tiny import TINY_CONFIGS
from oqcompile.passes.split_skip_norms import SplitSkipNorms, holds_skip_norms
from oqcompile.structure import analyze

# phi3: the builder splits gate_up; gemma2: post-norm blocks, sliding-window attention in every other layer
GENAI_FAMILIES = ("tiny-llama", "tiny-mistral", "tiny-qwen2", "tiny-phi3", "tiny-gemma2")
IDS = np.random.default_rng(0).integers(0, 256, (2, 24)).astype(np.int64)
CALIBRATION = CalibrationData(np.random.default_rng(5).integers(0, 256, (32, 32)), "random tokens")
TOLERANCE = 1e-4
W8A8_ERROR = {"tiny-llama": 0.0249, "tiny-mistral": 0.0314, "tiny-qwen2": 0.0344, "tiny-phi3": 0.0390,
              "tiny-gemma2": 0.0365}


@pytest.mark.parametrize("model_id", GENAI_FAMILIES)
def test_genai_graph_maps_to_the_config(tiny_export, model_id):
    from oqcompile.models import load_torch_model

    config = TINY_CONFIGS[model_id]
    model = modelio.load(tiny_export(model_id, "genai"))
    assert holds_skip_norms(model)
    SplitSkipNorms()(model)
    t = analyze(model)
    head_dim = config.hidden_size // config.num_attention_heads
    assert len(t.blocks) == config.num_hidden_layers and t.tied == config.tie_word_embeddings
    layer = load_torch_model(model_id).model.layers[1].self_attn
    a = t.blocks[1].attention
    assert a.fused.op_type == "GroupQueryAttention" and a.rotary_inside and a.readers == [a.packed]
    assert (a.num_heads, a.num_kv_heads, a.head_dim) == (
        config.num_attention_heads, config.num_key_value_heads, head_dim)
    if hasattr(layer, "qkv_proj"):  # Phi-3: rows of one packed weight, no biases
        q, kv = config.num_attention_heads * head_dim, config.num_key_value_heads * head_dim
        packed = layer.qkv_proj.weight.detach().numpy()
        weights = (packed[:q], packed[q:q + kv], packed[q + kv:])
        biases = (None, None, None)
    else:
        weights = tuple(p.weight.detach().numpy() for p in (layer.q_proj, layer.k_proj, layer.v_proj))
        biases = tuple(p.bias for p in (layer.q_proj, layer.k_proj, layer.v_proj))
    for role, weight, bias in zip((a.q, a.k, a.v), weights, biases):
        assert np.array_equal(role.weight(), weight.T)
        if bias is not None:
            assert np.array_equal(role.bias(), bias.detach().numpy())


def test_inspect_reads_a_genai_graph(tiny_export, capsys):
    assert main(["inspect", str(tiny_export("tiny-llama", "genai")), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)["transformer"]
    assert summary["attention"] == "GroupQueryAttention" and summary["rope"] == "inside the attention op"
    assert summary["blocks"][0]["q"].endswith("columns 0:64 [64x64]")


def test_split_skip_norms_alone_keeps_logits(tiny_export, tmp_path):
    source = tiny_export("tiny-qwen2", "genai")
    model = modelio.load(source)
    assert SplitSkipNorms()(model).modified and not holds_skip_norms(model)
    split = modelio.save(model, tmp_path / "split.onnx")
    assert relative_error(run_logits(split, IDS), run_logits(source, IDS)) <= TOLERANCE


@pytest.mark.parametrize("portable", [True, False])
@pytest.mark.parametrize("model_id", GENAI_FAMILIES)
def test_rotate_keeps_genai_logits(tiny_export, tmp_path, caplog, model_id, portable):
    source = tiny_export(model_id, "genai")
    target = compile_file(source, tmp_path / "rotated.onnx", "rotate", portable=portable).target
    assert relative_error(run_logits(target, IDS), run_logits(source, IDS)) <= TOLERANCE
    assert "R3 not applied to 2 of 2 blocks: GroupQueryAttention" in caplog.text
    assert json.loads(modelio.metadata(target)["oq.passes"])[0]["pass"] == "split_skip_norms"


@pytest.mark.parametrize("model_id", GENAI_FAMILIES)
def test_w8a8_on_genai_graph_runs_lowered_and_portable(tiny_export, tmp_path, model_id):
    source = tiny_export(model_id, "genai")
    expected = run_logits(source, IDS)
    for portable in (True, False):
        target = compile_file(source, tmp_path / f"w8a8-{portable}.onnx", "quarot-w8a8", calibration=CALIBRATION,
                              portable=portable).target
        assert relative_error(run_logits(target, IDS), expected) <= 1.1 * W8A8_ERROR[model_id]


def test_kv_quantization_inside_gqa_is_refused(tiny_export, tmp_path):
    with pytest.raises(OQError, match="cached inside GroupQueryAttention"):
        compile_file(tiny_export("tiny-llama", "genai"), tmp_path / "kv4.onnx", "quarot-w4a4kv4-gptq",
                     calibration=CALIBRATION)
    assert not (tmp_path / "kv4.onnx").exists()


def generate(folder, prompt=(1, 17, 42, 99, 7), tokens=20) -> list[int]:
    """Greedy generation by ONNX Runtime GenAI from the model folder ``folder``."""
    import onnxruntime_genai as og

    model = og.Model(str(folder))
    params = og.GeneratorParams(model)
    params.set_search_options(max_length=len(prompt) + tokens, do_sample=False)
    generator = og.Generator(model, params)
    generator.append_tokens(list(prompt))
    generated = []
    while not generator.is_done() and len(generated) < tokens:
        generator.generate_next_token()
        generated.append(int(generator.get_next_tokens()[0]))
    return generated


def test_rotated_genai_folder_generates_the_same_tokens(tiny_export, tmp_path):
    source = tiny_export("tiny-llama", "genai")
    target = compile_file(source, tmp_path / "decoder.onnx", "rotate").target
    config = json.loads((tmp_path / "genai_config.json").read_text())["model"]["decoder"]
    assert config["filename"] == "decoder.onnx" and config["session_options"]["custom_ops_library"]
    assert (tmp_path / config["session_options"]["custom_ops_library"]).is_file()
    assert (tmp_path / "tokenizer.json").is_file() and target.is_file()
    expected = generate(source.parent)
    assert len(expected) == 20 and generate(tmp_path) == expected


def test_lowered_w8a8_genai_folder_generates(tiny_export, tmp_path):
    source = tiny_export("tiny-qwen2", "genai")
    compile_file(source, tmp_path / "model.onnx", "quarot-w8a8", calibration=CALIBRATION)
    ops = {node.domain for node in modelio.load(tmp_path / "model.onnx").graph}
    assert "oq" in ops
    assert len(generate(tmp_path)) == 20


def test_portable_genai_folder_names_no_library(tiny_export, tmp_path):
    compile_file(tiny_export("tiny-mistral", "genai"), tmp_path / "model.onnx", "rotate", portable=True)
    config = json.loads((tmp_path / "genai_config.json").read_text())["model"]["decoder"]
    assert "custom_ops_library" not in config["session_options"]
    assert not list(tmp_path.glob("*.so"))


def test_genai_output_into_its_input_folder_is_refused(tiny_export):
    source = tiny_export("tiny-llama", "genai")
    with pytest.raises(OQError, match="write the output to another folder"):
        compile_file(source, source.parent / "rotated.onnx", "rotate")
    assert not (source.parent / "rotated.onnx").exists()


def test_genai_int4_model_is_refused_with_a_reason(tiny_export, tmp_path):
    source = tiny_export("tiny-llama", "genai", dtype="int4")
    with pytest.raises(OQError, match="MatMulNBits .*already quantized.*-p fp32"):
        compile_file(source, tmp_path / "model.onnx", "rotate")
    assert list(tmp_path.iterdir()) == []


def test_inspect_reads_a_genai_int4_model(tiny_export):
    from oqcompile.inspection import describe

    description = describe(tiny_export("tiny-llama", "genai", dtype="int4"))
    nbits = [row for row in description["linears"] if row["op"] == "com.microsoft.MatMulNBits"]
    assert nbits and all(row["weights"].startswith("int4 in groups of") for row in nbits)
    assert description["ops"]["com.microsoft.MatMulNBits"] == len(nbits)
    assert "already quantized" in description["transformer"]["not_mapped"]
