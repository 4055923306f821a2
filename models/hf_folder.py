"""A ``transformers`` model saved as a Hugging Face folder, for exporters that read folders (the
GenAI model builder, Optimum)."""

from __future__ import annotations

import pathlib

from oqcompile.errors import OQError

__all__ = ["save_hf_folder"]


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
