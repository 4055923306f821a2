"""The command line: happy path on a tiny model, and one-line errors for bad input."""

import json
import pathlib
import re
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
    description = json.loads(shown.stdout)
    assert description["transformer"]["num_blocks"] == 2 and description["transformer"]["num_kv_heads"] == 2
    assert description["compiled"] is None and description["ops"] == {} and description["rotations"] == []
    assert [row["name"] for row in description["linears"]][:2] == ["layers.0.self_attn.q_proj",
                                                                  "layers.0.self_attn.k_proj"]
    assert {(row["weights"], row["activations"], row["op"]) for row in description["linears"]} == {
        ("float", "float", "MatMul")}
    table = oqcompile("inspect", source)
    assert "block 1" in table.stdout and "down" in table.stdout and "not written by oqcompile" in table.stdout
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


@pytest.mark.parametrize("portable", [True, False])
def test_inspect_shows_what_was_done(tiny_export, tokenizer_dir, tmp_path, portable):
    """Recipe, passes, per-layer formats, inserted rotations and custom ops of a compiled file,
    portable (QDQ + MatMul) and lowered (oq ops)."""
    target = tmp_path / "q.onnx"
    result = oqcompile("optimize", tiny_export("tiny-llama"), "-o", target, "--recipe", "quarot-w4a8",
                       "--tokenizer", tokenizer_dir, "--calib-tokens", 512, *(["--portable"] if portable else []))
    assert result.returncode == 0, result.stderr
    description = json.loads(oqcompile("inspect", target, "--json").stdout)
    compiled = description["compiled"]
    assert compiled["recipe"] == "quarot-w4a8" and compiled["calibration"]["text"] == "emma[:512]"
    steps = {step["pass"]: step["params"] for step in compiled["passes"]}
    assert steps["quantize_weights"]["bits"] == 4 and steps["quantize_weights"]["group"] == 32
    assert ("lower" in steps) != portable
    op = "QDQ + MatMul" if portable else "oq.QMatMul"
    rows = {row["name"]: (row["weights"], row["activations"], row["op"]) for row in description["linears"]}
    assert len(rows) == 15  # 7 per block and the lm_head, each named by its role
    assert rows["layers.1.mlp.down_proj"] == ("int4 in groups of 32", "int8 per token", op)
    assert rows["lm_head"] == ("int8 in groups of 32", "int8 per token", op)  # the recipe's lm_head_bits
    # online: R3 on q and k per block (head size 16), R4 before each down_proj (96), R2's before o_proj (64)
    assert {(r["size"], r["count"]) for r in description["rotations"]} == {(16, 4), (96, 2), (64, 2)}
    assert all(r["online"] and r["op"] == ("MatMul" if portable else "oq.Hadamard") for r in description["rotations"])
    if portable:
        assert description["ops"] == {} and description["transformer"]["num_blocks"] == 2
    else:
        assert description["ops"]["oq.QMatMul"] == 15 and description["ops"]["oq.Hadamard"] == 8
        assert "lowered" in description["transformer"]["not_mapped"]
    table = oqcompile("inspect", target, "--layers").stdout
    assert "recipe quarot-w4a8" in table and "quantize_weights (bits=4" in table
    assert re.search(r"layers\.1\.mlp\.down_proj +96x64 +int4 in groups of 32 +int8 per token", table)


def test_quiet_prints_nothing_and_pipes_get_no_bars(tiny_export, tmp_path):
    loud = oqcompile("optimize", tiny_export("tiny-llama"), "-o", tmp_path / "a.onnx")
    assert loud.returncode == 0 and loud.stdout.startswith("wrote ") and loud.stderr == ""  # stderr: no tty
    quiet = oqcompile("-q", "optimize", tiny_export("tiny-llama"), "-o", tmp_path / "b.onnx")
    assert quiet.returncode == 0 and quiet.stdout == "" and quiet.stderr == ""
    assert (tmp_path / "b.onnx").read_bytes() == (tmp_path / "a.onnx").read_bytes()


def test_progress_bars_name_each_pass(tiny_export, tmp_path, monkeypatch, capsys):
    from oqcompile.cli import main

    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    assert main(["optimize", str(tiny_export("tiny-llama")), "-o", str(tmp_path / "a.onnx")]) == 0
    bars = capsys.readouterr().err
    assert "passes: 100%" in bars and "rotate_residual" in bars and "drop_nan_guard" in bars
