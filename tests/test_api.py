"""The Python API (``oqcompile.optimize``): the README's snippet runs as written, and a file in
and out gives the same bytes as the command line."""

import pathlib
import re
import shutil
import subprocess
import sys

from conftest import save_tokenizer

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_readme_python_snippet_runs(tiny_export, tmp_path):
    from oqcompile.data import CALIBRATION_BOOK, book_text

    snippet = next(block for block in re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), re.S)
                   if "oqcompile.optimize" in block)
    tokenizer = save_tokenizer(tmp_path / "tokenizer", book_text(CALIBRATION_BOOK)[:20000])
    snippet, count = re.subn(r'^source, tokenizer = .*$', f'source, tokenizer = "{tiny_export("tiny-llama")}", '
                             f'"{tokenizer}"', snippet, flags=re.M)
    assert count == 1
    (tmp_path / "snippet.py").write_text(snippet)
    shutil.copy(ROOT / "README.md", tmp_path / "README.md")
    result = subprocess.run([sys.executable, "snippet.py"], cwd=tmp_path, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    printed = result.stdout.splitlines()
    assert "'quantize_weights'" in printed[0] and "README.md[:1024]" in printed[0] and "cpu-int4" in printed[0]
    assert "'name': 'layers.0.self_attn.q_proj'" in printed[1] and "'op': 'oq.QMatMul'" in printed[1]


def test_optimize_file_to_file_is_the_command_line(tiny_export, tmp_path):
    import oqcompile

    source = tiny_export("tiny-llama")
    model, summary = oqcompile.optimize(source, "rotate", seed=2, output=tmp_path / "api.onnx")
    assert summary.target == tmp_path / "api.onnx" and model.metadata_props["oq.recipe"] == "rotate"
    subprocess.run([sys.executable, "-m", "oqcompile.cli", "optimize", source, "-o", tmp_path / "cli.onnx",
                    "--seed", "2"], check=True, capture_output=True)
    assert (tmp_path / "api.onnx").read_bytes() == (tmp_path / "cli.onnx").read_bytes()
    in_memory, summary = oqcompile.optimize(source, "rotate", seed=2)
    assert summary.target is None and in_memory.metadata_props["oq.passes"] == model.metadata_props["oq.passes"]
