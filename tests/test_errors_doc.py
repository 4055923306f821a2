"""docs/ERRORS.md, row by row: each bad input gets exactly the message the table shows, on one
line, with exit status 2; the input files are unchanged and nothing is left written."""

import hashlib
import os
import pathlib
import re
import subprocess
import sys
import tempfile

import onnx
import pytest
from onnx import helper

from conftest import save_tokenizer

ROOT = pathlib.Path(__file__).resolve().parents[1]
ROWS = re.findall(r"^\| `([a-z0-9-]+)` \| .*? \| `(oqcompile [^`]*)` \| `([^`]*)` \|$",
                  (ROOT / "docs" / "ERRORS.md").read_text(encoding="utf-8"), re.M)


def _copy_tiny(tiny_export, folder: pathlib.Path, name: str = "model.onnx") -> pathlib.Path:
    path = folder / name
    path.write_bytes(tiny_export("tiny-llama").read_bytes())
    return path


def _truncated(folder, tiny_export):
    (folder / "broken.onnx").write_bytes(tiny_export("tiny-llama").read_bytes()[:5000])


def _relu(folder, tiny_export):
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [2])],
                              [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [2])])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)]), folder / "relu.onnx")


def _bert(folder, tiny_export):
    import torch
    import transformers

    torch.manual_seed(0)
    config = transformers.BertConfig(vocab_size=256, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                     num_attention_heads=4, max_position_embeddings=64)
    model = transformers.BertForMaskedLM(config).eval()
    torch.onnx.export(model, (torch.zeros((1, 8), dtype=torch.int64),), str(folder / "bert.onnx"), dynamo=False,
                      input_names=["input_ids"], output_names=["logits"], opset_version=17)


def _missing_data(folder, tiny_export):
    onnx.save(onnx.load(tiny_export("tiny-llama")), folder / "model.onnx", save_as_external_data=True,
              location="model.onnx.data", size_threshold=0)
    (folder / "model.onnx.data").unlink()


def _model(folder, tiny_export):
    _copy_tiny(tiny_export, folder)


def _read_only_folder(folder, tiny_export):
    _copy_tiny(tiny_export, folder)
    if os.geteuid() != 0:
        (folder / "locked").mkdir()
        (folder / "locked").chmod(0o500)
        return
    # permission bits do not bind root: a read-only mount does (sysfs, where the machine mounts it so)
    try:
        with tempfile.TemporaryFile(dir="/sys"):
            pytest.skip("root, and no read-only folder to write into (/sys is writable here)")
    except OSError:
        (folder / "locked").symlink_to("/sys")


def _compiled(folder, tiny_export):
    from oqcompile.compiler import compile_file

    compile_file(_copy_tiny(tiny_export, folder, "source.onnx"), folder / "rotated.onnx", "rotate", portable=True)
    (folder / "source.onnx").unlink()


def _dynamic(folder, tiny_export):
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(_copy_tiny(tiny_export, folder, "source.onnx"), folder / "dynamic.onnx",
                     weight_type=QuantType.QInt8, op_types_to_quantize=["MatMul"])
    (folder / "source.onnx").unlink()


def _genai_int4(folder, tiny_export):
    source = tiny_export("tiny-llama", "genai", dtype="int4")
    for file in source.parent.iterdir():
        (folder / file.name).write_bytes(file.read_bytes())
    (folder / "out").mkdir()


def _extra_input(folder, tiny_export):
    model = onnx.load(tiny_export("tiny-llama"))
    model.graph.input.append(helper.make_tensor_value_info("token_type_ids", onnx.TensorProto.INT64,
                                                           ["batch", "sequence"]))
    onnx.save(model, folder / "model.onnx")
    save_tokenizer(folder / "tokenizer", "It is a truth universally acknowledged. " * 40)


def _calibration_texts(folder, tiny_export):
    _copy_tiny(tiny_export, folder)
    save_tokenizer(folder / "tokenizer", "It is a truth universally acknowledged. " * 40)
    (folder / "empty.txt").write_text("")
    (folder / "short.txt").write_text("It is a truth universally acknowledged.")


def _group_recipes(folder, tiny_export):
    _copy_tiny(tiny_export, folder)
    for group in (48, 0):
        (folder / f"groups{group}.toml").write_text(f'[[pass]]\nname = "insert_qdq"\nbits = 8\ngroup = {group}\n')


def _duquant_first(folder, tiny_export):
    _copy_tiny(tiny_export, folder)
    (folder / "duquant-first.toml").write_text('[[pass]]\nname = "duquant"\n[[pass]]\nname = "rotate_residual"\n')


def _large_tokenizer(folder, tiny_export):
    from oqcompile.data import CALIBRATION_BOOK, book_text

    _copy_tiny(tiny_export, folder)
    save_tokenizer(folder / "tokenizer", book_text(CALIBRATION_BOOK)[:20000], vocab_size=1000)


BUILDERS = {
    "no-file": None, "truncated": _truncated, "not-a-transformer": _relu, "post-norm-encoder": _bert,
    "missing-external-data": _missing_data, "missing-output-folder": _model, "output-is-a-folder": _model,
    "read-only-output-folder": _read_only_folder, "overwrite-input": _model, "unknown-recipe": _model,
    "activation-group-not-dividing": _group_recipes, "activation-group-zero": _group_recipes,
    "duquant-before-rotation": _duquant_first,
    "calibration-tokens": _model, "calibration-text-empty": _calibration_texts,
    "calibration-text-too-short": _calibration_texts, "already-compiled": _compiled, "already-quantized-dynamic": _dynamic,
    "already-quantized-int4": _genai_int4, "unexpected-graph-input": _extra_input,
    "tokenizer-larger-than-vocabulary": _large_tokenizer,
}


def test_every_row_has_a_builder_and_every_builder_a_row():
    assert sorted(BUILDERS) == sorted(case for case, _, _ in ROWS)


def _snapshot(folder: pathlib.Path) -> dict[str, str]:
    """Every file under ``folder`` (symbolic links not followed) and its hash."""
    files = {}
    for parent, _, names in os.walk(folder):
        for name in names:
            path = pathlib.Path(parent, name)
            files[str(path.relative_to(folder))] = "link" if path.is_symlink() else hashlib.sha256(
                path.read_bytes()).hexdigest()
    return files


@pytest.mark.parametrize("case, command, message", ROWS, ids=[row[0] for row in ROWS])
def test_documented_error(case, command, message, tiny_export, tmp_path):
    if BUILDERS[case] is not None:
        BUILDERS[case](tmp_path, tiny_export)
    before = _snapshot(tmp_path)
    arguments = command.split()[1:]
    result = subprocess.run([sys.executable, "-m", "oqcompile.cli", *arguments], capture_output=True, text=True,
                            cwd=tmp_path, env={**os.environ, "NO_COLOR": "1"})
    assert result.returncode == 2, result.stderr
    assert result.stderr.splitlines() == [f"oqcompile: error: {message}"]
    assert _snapshot(tmp_path) == before  # the input unchanged, no output, no scratch left
