"""The PyTorch forward of an ONNX graph (oqcompile.torch_graph) computes ORT's logits.

Bound: float rounding, 1e-4 relative (ORT and PyTorch agree on SmolLM2 to 2.7e-6, section
"foundation" of docs/RESULTS.md); measured here: at most 3.1e-6 (SmolLM2, 64 tokens).
"""

import numpy as np
import pytest
import torch

from conftest import EVERY_FAMILY, relative_error, run_logits
from oqcompile import modelio
from oqcompile.errors import OQError
from oqcompile.evaluate import graph_feeds
from oqcompile.torch_graph import TorchGraph

FLOAT_ROUNDING = 1e-4


def torch_logits(path, ids: np.ndarray) -> np.ndarray:
    model = modelio.load(path)
    feeds = {name: torch.from_numpy(value) for name, value in graph_feeds(model.graph, ids).items()}
    with torch.no_grad():
        return TorchGraph(model.graph).run(feeds)[0].numpy()


@pytest.mark.parametrize("exporter", ["dynamo", "legacy"])
@pytest.mark.parametrize("model_id", EVERY_FAMILY)
def test_torch_forward_matches_ort(tiny_export, model_id, exporter):
    source = tiny_export(model_id, exporter)
    ids = np.random.default_rng(0).integers(0, 256, (2, 24))
    assert relative_error(torch_logits(source, ids), run_logits(source, ids)) <= FLOAT_ROUNDING


def test_an_op_it_does_not_implement_is_named(tiny_export):
    model = modelio.load(tiny_export("tiny-llama", opset=23))  # ONNX's own Attention and rotary ops
    with pytest.raises(OQError, match="does not implement Attention, RMSNormalization, RotaryEmbedding"):
        TorchGraph(model.graph)


@pytest.mark.real_model
def test_smollm2_torch_forward_matches_ort(smollm2_onnx):
    ids = np.random.default_rng(0).integers(0, 49152, (1, 64))
    assert relative_error(torch_logits(smollm2_onnx, ids), run_logits(smollm2_onnx, ids)) <= FLOAT_ROUNDING
