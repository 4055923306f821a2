"""The command line: happy path on a tiny model, and one-line errors for bad input."""

import json
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from conftest import run_logits, save_tokenizer


def oqcompile(*args):
    # Run from outside the checkout, as a user would.
    return subprocess.run([sys.executable, "-m", "oqcompile.cli", *map(str, args)],
                          capture_output=True, text=True, cwd=pathlib.Path(sys.executable).parent)


def assert_one_line_error(result, fragment):
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("oqcompile: error:"), result.stderr
    assert fragment in lines[0]
    assert "Traceback" not in result.stderr


def test_inspect_and_optimize(tiny_export, tmp_path):
    source = tiny_export("tiny-llama")
    shown = oqcompile("inspect", source, "--json")
    assert shown.returncode == 0, shown.stderr
    summary = json.loads(shown.stdout)
    assert summary["num_blocks"] == 2 and summary["num_kv_heads"] == 2
    table = oqcompile("inspect", source)
    assert "block 1" in table.stdout and "down" in table.stdout
    result = oqcompile("optimize", source, "-o", tmp_path / "out.onnx", "--recipe", "rotate", "--seed", 3)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "out.onnx").is_file()


def test_quantization_recipes_on_the_command_line(tiny_export, tmp_path):
    source = tiny_export("tiny-llama")
    listed = oqcompile("recipes")
    assert "quarot-w4a4-gptq" in listed.stdout and "ot-quarot-w4a4" in listed.stdout
    result = oqcompile("optimize", source, "-o", tmp_path / "q.onnx", "--recipe", "naive-w4a4")
    assert result.returncode == 0, result.stderr
    # Calibrating recipes need the model's tokenizer; the tiny models have none.
    refused = oqcompile("optimize", source, "-o", tmp_path / "ot.onnx", "--recipe", "outliertune-w8a8")
    assert_one_line_error(refused, "no tokenizer for 'tiny-llama'")
    assert not (tmp_path / "ot.onnx").exists()
    missing = oqcompile("optimize", source, "-o", tmp_path / "t.onnx", "--recipe", tmp_path / "none.toml")
    assert_one_line_error(missing, "not a readable TOML recipe")


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory):
    """A 256-id BPE tokenizer (ids fit the tiny models) trained on the start of the calibration book."""
    from oqcompile.data import CALIBRATION_BOOK, book_text

    return save_tokenizer(tmp_path_factory.mktemp("tokenizer"), book_text(CALIBRATION_BOOK)[:20000])


@pytest.mark.parametrize("recipe", ["outliertune-w8a8", "quarot-w4a4-gptq"])
def test_calibrating_recipe_on_the_command_line(tiny_export, tokenizer_dir, tmp_path, recipe):
    """--tokenizer gives a tiny model a tokenizer: the calibrating path runs end to end on Emma."""
    from oqcompile import modelio

    target = tmp_path / "q.onnx"
    result = oqcompile("optimize", tiny_export("tiny-llama"), "-o", target, "--recipe", recipe,
                       "--tokenizer", tokenizer_dir, "--calib-tokens", 2048)
    assert result.returncode == 0, result.stderr
    calibration = json.loads(modelio.metadata(target)["oq.calibration"])
    assert calibration["text"] == "emma[:2048]" and calibration["tokens"] == 2048
    assert np.isfinite(run_logits(target, np.arange(48).reshape(2, 24))).all()


def test_eval_of_a_graph_that_is_not_a_language_model(tmp_path):
    import onnx
    from onnx import helper

    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"])], "g",
        [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["batch", "seq"])],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, ["batch", "seq"])])
    path = tmp_path / "relu.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)]), path)
    result = oqcompile("eval", path, "--tokens", 2048)
    assert_one_line_error(result, "not a language model: its first input 'x' is a tensor(float)")


def test_output_cut_by_a_closed_pipe_ends_quietly(tiny_export):
    """`oqcompile inspect FILE | head -1`: no BrokenPipeError traceback when head exits."""
    process = subprocess.Popen([sys.executable, "-m", "oqcompile.cli", "inspect", str(tiny_export("tiny-llama"))],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    process.stdout.close()  # the reader is gone before the first line is written
    stderr = process.stderr.read().decode()
    assert process.wait() == 141 and stderr == ""


@pytest.fixture(scope="module")
def large_tokenizer_dir(tmp_path_factory):
    """A 1000-id BPE tokenizer: more ids than the tiny models' 256-token vocabulary."""
    from oqcompile.data import CALIBRATION_BOOK, book_text

    return save_tokenizer(tmp_path_factory.mktemp("large-tokenizer"), book_text(CALIBRATION_BOOK)[:20000],
                          vocab_size=1000)


@pytest.mark.parametrize("command", ["eval", "optimize"])
def test_tokenizer_larger_than_the_vocabulary_is_one_line(tiny_export, large_tokenizer_dir, tmp_path, command):
    arguments = ["--tokens", 2048] if command == "eval" else ["-o", tmp_path / "q.onnx", "--recipe",
                                                               "outliertune-w8a8", "--calib-tokens", 2048]
    result = oqcompile(command, tiny_export("tiny-llama"), *arguments, "--tokenizer", large_tokenizer_dir)
    assert_one_line_error(result, "but the model's vocabulary has 256 tokens")
    assert list(tmp_path.iterdir()) == []
