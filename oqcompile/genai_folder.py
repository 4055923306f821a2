"""Hand a compiled model back to ONNX Runtime GenAI as a model folder.

GenAI runs a folder, not a file: ``genai_config.json`` (the decoder's file name, inputs, outputs
and session options), the model and the tokenizer files. When the input model lies in such a
folder (the GenAI model builder writes one), the output is written as one too:

- every other file of the input folder (tokenizer, chat template, ...) is copied beside the output;
- ``genai_config.json`` is copied with ``decoder.filename`` set to the output's file name;
- a model lowered to oq ops also gets the op library copied into the folder and named in
  ``decoder.session_options.custom_ops_library``: GenAI loads custom op libraries only from
  inside the model folder, and the folder then runs on a machine without oqcompile.

The input folder is never written to: the output must go to another folder.
"""

from __future__ import annotations

import json
import pathlib
import shutil

from oqcompile.errors import OQError
from oqcompile.runtime import ops_library_path

__all__ = ["CONFIG_NAME", "check_target", "genai_config", "write_folder"]

CONFIG_NAME = "genai_config.json"


def genai_config(model_path: pathlib.Path) -> pathlib.Path | None:
    """The ``genai_config.json`` beside ``model_path`` naming it as the decoder, else None."""
    config = model_path.parent / CONFIG_NAME
    if not config.is_file():
        return None
    try:
        decoder = json.loads(config.read_text())["model"]["decoder"]
    except (ValueError, KeyError, TypeError) as error:
        raise OQError(f"{config}: not a readable ONNX Runtime GenAI config ({error})") from error
    return config if decoder.get("filename") == model_path.name else None


def check_target(source: pathlib.Path, target: pathlib.Path) -> None:
    """Refuse to write a GenAI model into its own input folder (that would rewrite its config)."""
    if genai_config(source) is not None and target.parent.resolve() == source.parent.resolve():
        raise OQError(f"{source} is part of an ONNX Runtime GenAI folder: write the output to another "
                      "folder, which becomes a GenAI folder of its own")


def write_folder(source: pathlib.Path, target: pathlib.Path, lowered: bool) -> pathlib.Path | None:
    """Make ``target``'s folder a GenAI folder like ``source``'s (see module doc); its config, or None
    when ``source`` is not in a GenAI folder."""
    config_path = genai_config(source)
    if config_path is None:
        return None
    model_files = {source.name, source.name + ".data", CONFIG_NAME}
    for item in source.parent.iterdir():
        if item.is_file() and item.name not in model_files:
            shutil.copy2(item, target.parent / item.name)
    config = json.loads(config_path.read_text())
    decoder = config["model"]["decoder"]
    decoder["filename"] = target.name
    options = decoder.setdefault("session_options", {})
    if lowered:
        library = ops_library_path()
        shutil.copy2(library, target.parent / library.name)
        options["custom_ops_library"] = library.name
    else:
        options.pop("custom_ops_library", None)
    written = target.parent / CONFIG_NAME
    written.write_text(json.dumps(config, indent=4))
    return written
