"""Every tiny family as each exporter that writes one ONNX file spells it: torch's dynamo exporter with
and without its optimizer, TorchScript (legacy), and Hugging Face Optimum's exporter (``oqcompile export
--exporter optimum``: TorchScript under Optimum's wrappers, with ``position_ids`` and the KV cache,
``past_key_values.*`` in and ``present.*`` out, as graph inputs; where most users' ONNX language models
come from). Each one maps, rotates exactly and runs W8A8 portable and lowered, calibrated through its
inputs (each role against the config: test_structure.py; the GenAI builder's folders:
test_genai_inputs.py).

Bounds: docs/RESULTS.md section "tiny-errors" (rotate at most 1.3e-6 against the export; quarot-w8a8,
worst of portable and lowered, is the same on every exporter of a family: the numbers below).
"""

import numpy as np
import onnx
import pytest

from conftest import EVERY_FAMILY, FILE_EXPORTERS, relative_error, run_logits
from oqcompile import compile_file, modelio
from oqcompile.calibrate import CalibrationData
from oqcompile.models.tiny import TINY_CONFIGS
from oqcompile.structure import analyze

IDS = np.random.default_rng(0).integers(0, 256, (2, 24)).astype(np.int64)
CALIBRATION = CalibrationData(np.random.default_rng(5).integers(0, 256, (32, 32)), "random tokens")
TOLERANCE = 1e-4
W8A8_ERROR = {"tiny-llama": 0.0249, "tiny-mistral": 0.0314, "tiny-qwen2": 0.0344, "tiny-phi3": 0.0390,
              "tiny-opt": 0.0340, "tiny-gemma2": 0.0365}


@pytest.mark.parametrize("exporter", FILE_EXPORTERS)
@pytest.mark.parametrize("model_id", EVERY_FAMILY)
def test_export_maps_rotates_and_quantizes(tiny_export, tmp_path, model_id, exporter):
    """Portable and lowered: torch's dynamo exporter without its optimizer writes Phi-3's gate/up
    ``chunk`` as ``SplitToSequence``, whose sequence type the saved file must keep, and Gemma 2's norm
    gain ``1 + w`` unfolded, with a ``CastLike`` (``type_as``) between the norm and its readers."""
    config = TINY_CONFIGS[model_id]
    source = tiny_export(model_id, exporter)
    transformer = analyze(modelio.load(source))
    assert (len(transformer.blocks), transformer.hidden_size) == (config.num_hidden_layers, config.hidden_size)
    expected = run_logits(source, IDS)
    for portable in (True, False):
        rotated = compile_file(source, tmp_path / f"rotate-{portable}.onnx", "rotate", portable=portable).target
        assert relative_error(run_logits(rotated, IDS), expected) <= TOLERANCE
        w8a8 = compile_file(source, tmp_path / f"w8a8-{portable}.onnx", "quarot-w8a8", calibration=CALIBRATION,
                            portable=portable).target
        assert relative_error(run_logits(w8a8, IDS), expected) <= 1.1 * W8A8_ERROR[model_id]


def test_optimum_graph_without_cache_rotates(tiny_export, tmp_path):
    """Optimum's ``text-generation`` task: no past inputs, ``position_ids`` still one."""
    source = tiny_export("tiny-qwen2", "optimum", kv_cache=False)
    inputs = [value.name for value in onnx.load(source, load_external_data=False).graph.input]
    assert "position_ids" in inputs and not any(name.startswith("past_key_values") for name in inputs)
    rotated = compile_file(source, tmp_path / "rotated.onnx", "rotate").target
    assert relative_error(run_logits(rotated, IDS), run_logits(source, IDS)) <= TOLERANCE
