"""Shared fixtures: tiny models exported three ways, the real SmolLM2 export, ORT helpers."""

from __future__ import annotations

import hashlib
import pathlib

import numpy as np
import pytest

from oqcompile.cache import cache_dir, making
from oqcompile import evaluate
from oqcompile.evaluate import feeds
from oqcompile.models import TORCH_EXPORTERS  # noqa: F401  (re-exported to the tests)

LLAMA_FAMILIES = ("tiny-llama", "tiny-mistral", "tiny-qwen2", "tiny-phi3")  # phi3: packed qkv, gate_up
FAMILIES = (*LLAMA_FAMILIES, "tiny-opt")  # every recipe keeps logits on these
EVERY_FAMILY = (*FAMILIES, "tiny-gemma2")  # Gemma 2: post-norm blocks, whose gains R1 cannot pass
FILE_EXPORTERS = (*TORCH_EXPORTERS, "optimum")  # the GenAI builder's graphs differ: test_genai_inputs.py


def pytest_collection_modifyitems(items):
    """Real-model tests first: with test workers (``make test``: one module per worker at a time)
    the longest modules start at once and the tiny ones fill in around them."""
    items.sort(key=lambda item: item.get_closest_marker("real_model") is None)


def export_to(model_id: str, exporter: str, path: pathlib.Path, **options) -> pathlib.Path:
    from oqcompile.models.export import export_to_file

    return export_to_file(model_id, path, exporter=exporter, **options)


@pytest.fixture(scope="session")
def tiny_export(tmp_path_factory):
    """``tiny_export(model_id, exporter, dtype=, kv_cache=)`` -> path of a (session-cached) export."""
    made: dict[tuple, pathlib.Path] = {}

    def get(model_id: str, exporter: str = "dynamo", **options) -> pathlib.Path:
        if exporter == "optimum":
            options.setdefault("kv_cache", True)  # Optimum's usual decoder file: with past
        key = (model_id, exporter, *sorted(options.items()))
        if key not in made:
            folder = tmp_path_factory.mktemp(f"{model_id}-{exporter}")
            made[key] = export_to(model_id, exporter, folder / "model.onnx", **options)
        return made[key]

    return get


def exporter_sources() -> bytes:
    """The code of every exporter path (models/*.py): a cached export is made again when it changes."""
    from oqcompile import models

    return b"".join(path.read_bytes() for path in sorted(pathlib.Path(models.__file__).parent.glob("*.py")))


@pytest.fixture(scope="session")
def smollm2_onnx() -> pathlib.Path:
    """SmolLM2-135M exported once (dynamo, fp32) and kept in $OQ_CACHE between runs."""
    import torch
    import transformers

    key = hashlib.sha256(exporter_sources() + torch.__version__.encode() + transformers.__version__.encode())
    path = cache_dir("exports") / f"smollm2-135m-{key.hexdigest()[:12]}.onnx"
    with making(path):  # test workers share the cache
        if not path.is_file():
            export_to("smollm2-135m", "dynamo", path)
    return path


def lower_portable(portable: pathlib.Path, target: pathlib.Path) -> pathlib.Path:
    """Lower a portable compile (the passes compile_file appends unless portable): the lowered compile's
    logits, bit for bit (test_quantize.py), without running the recipe again."""
    from oqcompile import modelio
    from oqcompile.compiler import LOWERING, run_passes
    from oqcompile.passes.drop_nan_guard import DropNanGuard

    model = modelio.load(portable)
    run_passes(model, [*(step() for step in LOWERING), DropNanGuard()])
    return modelio.save(model, target, check=lambda staged: evaluate.check_loads(staged, target))


def save_tokenizer(directory: pathlib.Path, text: str, vocab_size: int = 256) -> pathlib.Path:
    """Train a BPE tokenizer on ``text`` and save it as a Hugging Face directory: at most
    ``vocab_size`` ids (256 fit the tiny models' embedding), for the calibrating paths."""
    import transformers
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE(unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.train_from_iterator([text], trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["[UNK]"],
                                                              show_progress=False))
    transformers.PreTrainedTokenizerFast(tokenizer_object=tokenizer, unk_token="[UNK]").save_pretrained(directory)
    return directory


def run_logits(path: pathlib.Path, input_ids: np.ndarray) -> np.ndarray:
    session = evaluate.session(path)  # registers the oq op library for lowered models
    return session.run(None, feeds(session, input_ids))[0]


def relative_error(actual: np.ndarray, expected: np.ndarray) -> float:
    return float(np.abs(actual - expected).max() / np.abs(expected).max())


@pytest.fixture(scope="session")
def smollm2_genai() -> pathlib.Path:
    """SmolLM2-135M through the ONNX Runtime GenAI model builder (fp32), in its own folder of $OQ_CACHE."""
    import onnxruntime_genai

    key = hashlib.sha256(exporter_sources() + onnxruntime_genai.__version__.encode())
    path = cache_dir("exports", f"smollm2-135m-genai-{key.hexdigest()[:12]}") / "model.onnx"
    with making(path.parent):
        if not path.is_file():
            export_to("smollm2-135m", "genai", path)
    return path
