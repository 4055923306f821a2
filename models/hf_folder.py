"""Exporters that read a Hugging Face folder and run in a child process (the GenAI model builder,
Optimum): the folder, written into a temporary folder beside the output, the child process, and
the output saved from what it wrote."""

from __future__ import annotations

import contextlib
import pathlib
import subprocess
import tempfile
from collections.abc import Iterator

from oqcompile import modelio
from oqcompile.errors import OQError

__all__ = ["exporting", "run_exporter", "save_exported", "save_hf_folder"]


@contextlib.contextmanager
def exporting(model_id: str, path: pathlib.Path, exporter: str, progress: bool = False) -> Iterator[tuple]:
    """``(work, bar)``: a temporary folder beside ``path`` holding ``model_id`` as a Hugging Face folder
    (``work / "hf"``), and a bar over the export's three steps, the first (loading) done."""
    from tqdm import tqdm

    from oqcompile.models import load_torch_model

    with tempfile.TemporaryDirectory(prefix=".export-", dir=path.parent) as work, \
            tqdm(total=3, desc=f"export {model_id} ({exporter})", unit="step", disable=not progress) as bar:
        work = pathlib.Path(work)
        bar.set_postfix_str("loading")
        save_hf_folder(load_torch_model(model_id), model_id, work / "hf")
        bar.update()
        yield work, bar


def run_exporter(command: list[str], written: pathlib.Path, model_id: str, exporter: str,
                 env: dict[str, str] | None = None) -> None:
    """Run ``command``; a failure, or no file ``written``, raises :class:`OQError` with its last line."""
    result = subprocess.run(command, capture_output=True, text=True, env=env)
    if result.returncode != 0 or not written.is_file():
        last = (result.stderr.strip() or result.stdout.strip() or "no model written").splitlines()[-1]
        raise OQError(f"{exporter} failed on {model_id}: {last}")


def save_exported(written: pathlib.Path, model_id: str, path: pathlib.Path) -> pathlib.Path:
    """Save the model file an exporter ``written`` to ``path``, recording ``oq.source_model``
    (appears only once ONNX Runtime loads it)."""
    from oqcompile.evaluate import check_loads

    model = modelio.load(written)
    model.metadata_props["oq.source_model"] = model_id
    return modelio.save(model, path, check=lambda staged: check_loads(staged, path))


def save_hf_folder(torch_model, model_id: str, folder: pathlib.Path) -> None:
    """``torch_model`` (float weights) and the tokenizer of ``model_id`` as a Hugging Face folder
    (a placeholder word-level tokenizer over the vocabulary for models without one)."""
    import transformers

    from oqcompile.models import load_tokenizer

    transformers.utils.logging.disable_progress_bar()
    torch_model.config.__dict__.pop("quantization_config", None)  # SmolLM2 is read from GGUF: save it as float
    torch_model.hf_quantizer = None
    torch_model.save_pretrained(folder)
    try:
        tokenizer = load_tokenizer(model_id)
    except OQError:
        tokenizer = _placeholder_tokenizer(torch_model.config.vocab_size)
    tokenizer.save_pretrained(folder)


def _placeholder_tokenizer(vocab_size: int):
    import transformers
    from tokenizers import Tokenizer, models, pre_tokenizers

    vocabulary = {f"t{index}": index for index in range(vocab_size)}
    tokenizer = Tokenizer(models.WordLevel(vocabulary, unk_token="t0"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    return transformers.PreTrainedTokenizerFast(tokenizer_object=tokenizer, unk_token="t0", bos_token="t1",
                                                eos_token="t2", pad_token="t2")
