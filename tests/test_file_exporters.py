"""Every tiny family as each exporter that writes one ONNX file spells it: torch's dynamo exporter with
and without its optimizer and at opsets 18 and 23, TorchScript (legacy), Hugging Face Optimum's exporter
(``oqcompile export --exporter optimum``: TorchScript under Optimum's wrappers, with ``position_ids`` and
the KV cache, ``past_key_values.*`` in and ``present.*`` out, as graph inputs; where most users' ONNX
language models come from), and the dynamo export as ONNX Runtime's session optimizer saves it. Each one
maps, rotates exactly and runs W8A8 portable and lowered, calibrated through its inputs (each role against
the config: test_structure.py; the GenAI builder's folders: test_genai_inputs.py).

Bounds: docs/RESULTS.md section "tiny-errors": rotate at most 1.7e-6 against the export; quarot-w8a8,
worst of portable and lowered and of every exporter, is W8A8_ERROR (the same on every exporter of a
family; at opsets 18 and 23, which run one sequence, OPSET_W8A8_ERROR).
"""

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from conftest import EVERY_FAMILY, FILE_EXPORTERS, relative_error, run_logits
from oqcompile import compile_file, modelio
from oqcompile.calibrate import CalibrationData
from oqcompile.inspection import describe
from oqcompile.models.tiny import TINY_CONFIGS
from oqcompile.passes.split_fused_linears import SplitFusedLinears
from oqcompile.structure import analyze

IDS = np.random.default_rng(0).integers(0, 256, (2, 24)).astype(np.int64)
CALIBRATION = CalibrationData(np.random.default_rng(5).integers(0, 256, (32, 32)), "random tokens")
TOLERANCE = 1e-4
W8A8_ERROR = {"tiny-llama": 0.0249, "tiny-mistral": 0.0314, "tiny-qwen2": 0.0344, "tiny-phi3": 0.0390,
              "tiny-opt": 0.0340, "tiny-gemma2": 0.0365}
OPSET_W8A8_ERROR = {"tiny-llama": 0.0268, "tiny-mistral": 0.0316, "tiny-qwen2": 0.0247, "tiny-phi3": 0.0456,
                    "tiny-opt": 0.0357, "tiny-gemma2": 0.0361}


def maps_rotates_and_quantizes(source, model_id, folder, ids=IDS, w8a8_error=W8A8_ERROR):
    config = TINY_CONFIGS[model_id]
    model = modelio.load(source)
    SplitFusedLinears()(model)  # as inspect and optimize do: ORT-optimized graphs hold them
    transformer = analyze(model)
    assert (len(transformer.blocks), transformer.hidden_size) == (config.num_hidden_layers, config.hidden_size)
    expected = run_logits(source, ids)
    for portable in (True, False):
        rotated = compile_file(source, folder / f"rotate-{portable}.onnx", "rotate", portable=portable).target
        assert relative_error(run_logits(rotated, ids), expected) <= TOLERANCE
        w8a8 = compile_file(source, folder / f"w8a8-{portable}.onnx", "quarot-w8a8", calibration=CALIBRATION,
                            portable=portable).target
        assert relative_error(run_logits(w8a8, ids), expected) <= 1.1 * w8a8_error[model_id]
    return transformer


@pytest.mark.parametrize("exporter", FILE_EXPORTERS)
@pytest.mark.parametrize("model_id", EVERY_FAMILY)
def test_export_maps_rotates_and_quantizes(tiny_export, tmp_path, model_id, exporter):
    """Portable and lowered: torch's dynamo exporter without its optimizer writes Phi-3's gate/up
    ``chunk`` as ``SplitToSequence``, whose sequence type the saved file must keep, and Gemma 2's norm
    gain ``1 + w`` unfolded, with a ``CastLike`` (``type_as``) between the norm and its readers."""
    maps_rotates_and_quantizes(tiny_export(model_id, exporter), model_id, tmp_path)


@pytest.mark.parametrize("opset", [18, 23])
@pytest.mark.parametrize("model_id", EVERY_FAMILY)
def test_opsets_18_and_23(tiny_export, tmp_path, model_id, opset):
    """At opset 23 the dynamo exporter writes the ONNX Attention, RotaryEmbedding (R3 goes after it)
    and RMSNormalization ops (Gemma 2's soft-capped scores stay unfused). One sequence: ORT runs torch's
    opset-23 RoPE only at batch 1 (its cos/sin have batch 1, which ORT's RotaryEmbedding requires to
    match the input's)."""
    source = tiny_export(model_id, "dynamo", opset=opset)
    attention = maps_rotates_and_quantizes(source, model_id, tmp_path, IDS[:1], OPSET_W8A8_ERROR).blocks[0].attention
    assert (attention.fused is not None) == (opset == 23 and model_id != "tiny-gemma2")
    assert (attention.q_rotary is not None) == (model_id != "tiny-opt")


@pytest.mark.parametrize("model_id", EVERY_FAMILY)
def test_ort_optimized_graph(tiny_export, tmp_path, model_id):
    """The dynamo export as ORT's session optimizer saves it (ORT_ENABLE_EXTENDED): kᵀ folded into the
    score MatMul (FusedMatMul), SiLU as QuickGelu, OPT's fc1 + ReLU as FusedGemm and Gemma 2's lm_head
    with the soft cap's division as FusedMatMul (those two split apart first: split_fused_linears)."""
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    options.optimized_model_filepath = str(tmp_path / "ort.onnx")
    ort.InferenceSession(str(tiny_export(model_id)), options, providers=["CPUExecutionProvider"])
    ops = {node.op_type for node in modelio.load(tmp_path / "ort.onnx").graph}
    assert ({"FusedGemm"} if model_id == "tiny-opt" else {"FusedMatMul"}) <= ops
    assert describe(tmp_path / "ort.onnx")["transformer"]["num_blocks"] == TINY_CONFIGS[model_id].num_hidden_layers
    maps_rotates_and_quantizes(tmp_path / "ort.onnx", model_id, tmp_path)


def test_optimum_graph_without_cache_rotates(tiny_export, tmp_path):
    """Optimum's ``text-generation`` task: no past inputs, ``position_ids`` still one."""
    source = tiny_export("tiny-qwen2", "optimum", kv_cache=False)
    inputs = [value.name for value in onnx.load(source, load_external_data=False).graph.input]
    assert "position_ids" in inputs and not any(name.startswith("past_key_values") for name in inputs)
    rotated = compile_file(source, tmp_path / "rotated.onnx", "rotate").target
    assert relative_error(run_logits(rotated, IDS), run_logits(source, IDS)) <= TOLERANCE
