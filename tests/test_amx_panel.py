"""The AMX-INT8 QMatMul panel, emulated: on a CPU with AMX, test_runtime_ops.py runs the real
instructions (``amx_int8`` in ``cpu_isas()``); everywhere else this module compiles the panel with
``OQ_AMX_EMULATED`` (the tile instructions as plain C++ with the hardware's shape rules) under
AddressSanitizer, and checks it against the scalar panel on hypothesis-drawn shapes: rows below,
at and above the 16-row tiles, one or two panels, several groups, groups smaller than a tile
(they take the VNNI panel), and the padded weight panels the AMX path unpacks."""

import pathlib
import shutil
import subprocess

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from oqcompile.runtime import cpu_isas

ROOT = pathlib.Path(__file__).resolve().parents[1]
SOURCES = ["tests/amx_panel_check.cc", "runtime_ops/src/panel_amx.cc", "runtime_ops/src/panel_avx512_vnni.cc",
           "runtime_ops/src/panel_scalar.cc", "runtime_ops/src/weight_panels.cc"]


@pytest.fixture(scope="module")
def check_program(tmp_path_factory):
    if "avx512_vnni" not in cpu_isas():
        pytest.skip("the emulated AMX panel scales its sums in AVX-512 and falls back to the VNNI panel; "
                    "this CPU has no AVX-512 VNNI")
    if shutil.which("g++") is None:
        pytest.skip("no g++ to compile the emulated AMX panel")
    program = tmp_path_factory.mktemp("amx") / "amx_panel_check"
    subprocess.run(["g++", "-std=c++17", "-O1", "-fsanitize=address,undefined", "-fno-sanitize-recover=all",
                    "-DOQ_AMX_EMULATED", "-mavx512f", "-mavx512bw", "-mavx512vnni", "-Iruntime_ops/src",
                    *SOURCES, "-o", str(program)], cwd=ROOT, check=True)
    return program


def run_cases(program: pathlib.Path, cases: list[str]) -> list[str]:
    result = subprocess.run([str(program)], input="\n".join(cases) + "\n", capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    answers = result.stdout.splitlines()
    assert len(answers) == len(cases), result.stdout
    return answers


def panel_case():
    return st.tuples(st.integers(1, 80), st.sampled_from([1, 2]), st.integers(0, 15), st.integers(1, 3),
                     st.sampled_from([8, 12, 16, 32, 48]), st.integers(-128, 0), st.integers(0, 2**31)).map(
        lambda c: f"panel {c[0]} {16 * c[1] - c[2]} {c[1]} {c[3]} {c[4]} {c[5]} {c[6]}")


@settings(max_examples=40, deadline=None)
@given(cases=st.lists(panel_case(), min_size=1, max_size=8))
def test_amx_panel_matches_the_scalar_panel(check_program, cases):
    for case, answer in zip(cases, run_cases(check_program, cases)):
        assert answer.startswith("ok"), f"{case}: {answer}"


def pack_case():
    return st.tuples(st.sampled_from([4, 6, 8]), st.integers(1, 40), st.sampled_from([8, 32, 60, 64, 96, 128, 576]),
                     st.integers(1, 4), st.integers(0, 2**31)).map(
        lambda c: f"pack {c[0]} {c[1]} {c[2] * c[3]} {c[3]} {c[4]}")


@settings(max_examples=30, deadline=None)
@given(cases=st.lists(pack_case(), min_size=1, max_size=8))
def test_padded_weight_panels_hold_the_unpadded_codes(check_program, cases):
    for case, answer in zip(cases, run_cases(check_program, cases)):
        assert answer == "ok 0", f"{case}: {answer}"

