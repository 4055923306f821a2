"""``oqcompile report``: one self-contained HTML page whose numbers are those the other tools
give (perplexity through ORT, per-layer errors of :mod:`oqcompile.layer_errors`), with its plots
inlined as PNG; refused, writing nothing, where the optimized file cannot be reproduced."""

import base64
import re
import subprocess
import sys

import pytest

from conftest import save_tokenizer


@pytest.fixture(scope="module")
def compiled(tiny_export, tmp_path_factory):
    """tiny-llama, its ot-quarot-w4a4 (lowered; calibrated on Emma) and a tokenizer for both."""
    from oqcompile.calibrate import calibration_data
    from oqcompile.compiler import compile_file
    from oqcompile.data import CALIBRATION_BOOK, book_text

    folder = tmp_path_factory.mktemp("report")
    tokenizer = save_tokenizer(folder / "tokenizer", book_text(CALIBRATION_BOOK)[:20000])
    source = tiny_export("tiny-llama")
    target = compile_file(source, folder / "ot.onnx", "ot-quarot-w4a4",
                          calibration=calibration_data(str(tokenizer), 2048, seq=1024)).target
    return source, target, tokenizer


def report(*arguments):
    return subprocess.run([sys.executable, "-m", "oqcompile.cli", *map(str, arguments)], capture_output=True,
                          text=True)


def test_report_page(compiled, tmp_path):
    from oqcompile.data import EVALUATION_BOOK, book_tokens
    from oqcompile.evaluate import perplexity, session

    source, target, tokenizer = compiled
    result = report("report", source, target, "-o", tmp_path / "r.html", "--tokens", 2048, "--tokenizer", tokenizer)
    assert result.returncode == 0, result.stderr
    page = (tmp_path / "r.html").read_text()
    images = re.findall(r'src="data:image/png;base64,([^"]+)"', page)
    assert len(images) == 2 and all(base64.b64decode(image)[:8] == b"\x89PNG\r\n\x1a\n" for image in images)
    assert "ot-quarot-w4a4" in page and "emma[:2048]" in page and "<td>outliertune</td>" in page
    tokens = book_tokens(EVALUATION_BOOK, str(tokenizer))[:2048]
    for path in (source, target):  # the table's perplexities are eval's
        expected = perplexity(session(path), tokens, seq=1024, progress=False).perplexity
        assert f"<td>{path.name}</td><td>{path.stat().st_size / 2**20:.1f}</td><td>{expected:.4f}</td>" in page
    worst = re.findall(r"<td>(layers\.\d+\.[a-z_.]+)</td><td>([0-9.]+)</td><td>([0-9.]+)</td><td>([0-9.]+)</td>", page)
    assert len(worst) == 10 and all(0 < float(total) < 1 for *_, total in worst)
    assert [float(total) for *_, total in worst] == sorted((float(total) for *_, total in worst), reverse=True)
    assert list(tmp_path.iterdir()) == [tmp_path / "r.html"]


def test_report_refuses_what_it_cannot_reproduce(compiled, tmp_path):
    source, target, tokenizer = compiled
    plain = report("report", source, source, "-o", tmp_path / "r.html", "--tokenizer", tokenizer)
    assert plain.returncode == 2 and "not written by oqcompile" in plain.stderr
    other = tmp_path / "other.txt"
    other.write_text("It is a truth universally acknowledged. " * 400)
    changed = report("report", source, target, "-o", tmp_path / "r.html", "--tokenizer", tokenizer,
                     "--calib-text", other)
    assert changed.returncode == 2 and "calibration tokens differ" in changed.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["other.txt"]
