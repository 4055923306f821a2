"""Export through Hugging Face Optimum's ONNX exporter (``--exporter optimum``), as most users' files are made.

Optimum's exporter (``optimum-onnx``) pins ``transformers < 4.58``, below the ``transformers``
oqcompile runs on. So it runs in a child process whose ``PYTHONPATH`` puts a small package
folder in front of this environment: Optimum and the ``transformers`` generation it supports
(:data:`OVERLAY`), installed once with ``pip install --target`` into ``$OQ_CACHE``; ``torch``,
``onnx`` and the rest are this environment's. The model goes to Optimum as a Hugging Face folder
(:func:`oqcompile.models.hf_folder.save_hf_folder`); Optimum writes its usual decoder:
``input_ids, attention_mask, position_ids, past_key_values.{i}.key/value -> logits, present.*``
with ``kv_cache`` (task ``text-generation-with-past``), else ``input_ids, attention_mask,
position_ids -> logits``.
"""

from __future__ import annotations

import hashlib
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile

from oqcompile import modelio
from oqcompile.cache import cache_dir, making
from oqcompile.errors import OQError

__all__ = ["OVERLAY", "export_optimum"]

OVERLAY = ("optimum==2.1.0", "optimum-onnx==0.1.0", "transformers==4.57.6", "huggingface_hub==0.36.2",
           "tokenizers==0.22.2")


def export_optimum(model_id: str, path: str | pathlib.Path, dtype: str = "fp32", kv_cache: bool = True,
                   progress: bool = False) -> pathlib.Path:
    """Export ``model_id`` with Optimum to ``path`` (see module doc), ``dtype`` fp32 or fp16; returns
    ``path``. ``progress``: a bar over the steps (load, export, write)."""
    from oqcompile.models.hf_folder import exporting, run_exporter, save_exported

    path = pathlib.Path(path)
    modelio.check_writable(path)
    packages = overlay()
    with exporting(model_id, path, "Optimum", progress) as (work, bar):
        bar.set_postfix_str("exporting")
        task = "text-generation-with-past" if kv_cache else "text-generation"
        search_path = os.pathsep.join(filter(None, [str(packages), os.environ.get("PYTHONPATH")]))
        run_exporter([sys.executable, "-m", "optimum.exporters.onnx", "--model", str(work / "hf"), "--task", task,
                      "--dtype", dtype, str(work / "onnx")], work / "onnx" / "model.onnx", model_id,
                     "Optimum's ONNX exporter", env={**os.environ, "PYTHONPATH": search_path})
        bar.update()
        bar.set_postfix_str("writing")
        written = save_exported(work / "onnx" / "model.onnx", model_id, path)
        bar.update()
    return written


def overlay() -> pathlib.Path:
    """The folder holding :data:`OVERLAY`, installed on first use (``pip install --target``)."""
    folder = cache_dir("optimum") / hashlib.sha256(" ".join(OVERLAY).encode()).hexdigest()[:12]
    with making(folder):
        if not folder.is_dir():
            staging = tempfile.mkdtemp(prefix=".installing-", dir=folder.parent)
            result = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target",
                                     staging, *OVERLAY], capture_output=True, text=True)
            if result.returncode != 0:
                shutil.rmtree(staging, ignore_errors=True)
                last = (result.stderr.strip() or "pip failed").splitlines()[-1]
                raise OQError(f"cannot install Optimum's exporter ({' '.join(OVERLAY)}) into {folder.parent}: "
                              f"{last}")
            os.rename(staging, folder)
    return folder
