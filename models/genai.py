"""Export through the ONNX Runtime GenAI model builder (``onnxruntime_genai.models.builder``).

The builder is how most people get an LLM onto ONNX Runtime; its graphs use ORT's fused ops
(``GroupQueryAttention`` with a packed QKV input and RoPE inside, ``SkipSimplifiedLayerNormalization``)
and GenAI's inputs (``attention_mask``, ``past_key_values.*`` with a named head size). The model is
written as a Hugging Face folder (float weights, its tokenizer) in a temporary folder beside the
output, the builder runs on it (``-e cpu``), and the model it writes is saved to the output path
with ``genai_config.json`` and the tokenizer files beside it, the config naming that file.

Tiny models have no tokenizer; the builder insists on one, so they get a placeholder word-level
tokenizer over their vocabulary (tokens ``t0`` ... ``t{vocab-1}``).
"""

from __future__ import annotations

import json
import pathlib
import shutil
import sys

from oqcompile import modelio
from oqcompile.errors import OQError

__all__ = ["GENAI_PRECISIONS", "export_genai"]

GENAI_PRECISIONS = ("fp32", "int4")  # what the builder writes for CPU (its fp16 is for GPUs)


def export_genai(model_id: str, path: str | pathlib.Path, dtype: str = "fp32",
                 progress: bool = False) -> pathlib.Path:
    """Export ``model_id`` with the GenAI builder to ``path`` (see module doc); returns ``path``.
    ``progress``: a bar over the steps (load, build, package the folder)."""
    from oqcompile.models.hf_folder import exporting, run_exporter, save_exported

    path = pathlib.Path(path)
    modelio.check_writable(path)
    if dtype not in GENAI_PRECISIONS:
        raise OQError(f"the GenAI builder writes {' or '.join(GENAI_PRECISIONS)} models for CPUs, not {dtype}")
    with exporting(model_id, path, "GenAI builder", progress) as (work, bar):
        bar.set_postfix_str("building")
        built = work / "built"
        run_exporter([sys.executable, "-m", "onnxruntime_genai.models.builder", "-m", model_id, "-i",
                      str(work / "hf"), "-o", str(built), "-p", dtype, "-e", "cpu", "-c", str(work / "cache")],
                     built / "model.onnx", model_id, "the ONNX Runtime GenAI builder")
        bar.update()
        bar.set_postfix_str("packaging")
        save_exported(built / "model.onnx", model_id, path)
        config = json.loads((built / "genai_config.json").read_text())
        config["model"]["decoder"]["filename"] = path.name
        (path.parent / "genai_config.json").write_text(json.dumps(config, indent=4))
        for extra in built.iterdir():
            if extra.name not in ("model.onnx", "model.onnx.data", "genai_config.json"):
                shutil.copy2(extra, path.parent / extra.name)
        bar.update()
    return path
