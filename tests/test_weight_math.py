"""Wide-float weight arithmetic in row chunks, and replacing a graph input without leaving the old one."""

import numpy as np
import onnx_ir as ir
import pytest

from oqcompile import weight_math
from oqcompile.graph import add_initializer, replace_input
from oqcompile.hadamard import hadamard, random_hadamard_rows
from oqcompile.weight_math import right_multiplier, wide_rows


@pytest.mark.parametrize("workers", [1, 4])
@pytest.mark.parametrize("rotation", ["dense", "transform"])
def test_rows_in_chunks_equal_the_whole_product(monkeypatch, rotation, workers):
    """Chunks that split the rows unevenly, formed on one thread or several, give the whole matrix's
    float64 product, rounded once."""
    matrix = np.random.default_rng(0).standard_normal((37, 96)).astype(np.float32)
    r = hadamard(96) if rotation == "dense" else random_hadamard_rows(96, 5)
    expected = right_multiplier(r)(matrix.astype(np.float64)).astype(np.float32)
    monkeypatch.setattr(weight_math, "CHUNK_ROWS", 5)
    monkeypatch.setattr(weight_math, "WORKERS", workers)
    np.testing.assert_array_equal(wide_rows(matrix, right_multiplier(r), np.float32), expected)


def test_float16_rows_are_formed_in_float32():
    """16-bit weights: float32 products, rounded once to float16: what float64 products round to,
    but where the float32 sum lies within its rounding error of a float16 tie (one ulp; measured
    in 3 of 3,552 entries here)."""
    matrix = np.random.default_rng(0).standard_normal((37, 96)).astype(np.float16)
    rotate = random_hadamard_rows(96, 5)
    formed = wide_rows(matrix, rotate, np.float16)
    np.testing.assert_array_equal(formed, rotate(matrix.astype(np.float32)).astype(np.float16))
    exact = rotate(matrix.astype(np.float64)).astype(np.float16)
    assert np.all(np.abs(formed.astype(np.float32) - exact) <= np.spacing(np.abs(exact)))
    assert np.count_nonzero(formed != exact) <= 0.01 * formed.size


def _graph_with_weight(transposed: bool) -> tuple[ir.Graph, ir.Node, ir.Value]:
    """y = x @ W with W an initializer (behind a Transpose if ``transposed``)."""
    x = ir.Value(name="x", type=ir.TensorType(ir.DataType.FLOAT), shape=ir.Shape([2, 4]))
    graph = ir.Graph([x], [], nodes=[], opset_imports={"": 20})
    weight = add_initializer(graph, "w", np.ones((4, 3) if not transposed else (3, 4), np.float32))
    nodes = []
    if transposed:
        nodes.append(ir.node("Transpose", [weight], attributes={"perm": [1, 0]}, name="t"))
        weight = nodes[-1].outputs[0]
    nodes.append(ir.node("MatMul", [x, weight], name="mm"))
    graph.extend(nodes)
    graph.outputs.append(nodes[-1].outputs[0])
    return graph, nodes[-1], weight


@pytest.mark.parametrize("transposed", [False, True])
def test_replace_input_removes_what_only_fed_the_old_weight(transposed):
    graph, matmul, _ = _graph_with_weight(transposed)
    replace_input(matmul, 1, add_initializer(graph, "w.new", np.zeros((4, 3), np.float32)))
    assert list(graph.initializers) == ["w.new"] and [n.op_type for n in graph] == ["MatMul"]


def test_replace_input_keeps_a_weight_that_is_still_read_or_a_graph_output():
    graph, matmul, weight = _graph_with_weight(False)
    other = ir.node("Identity", [weight], name="reader")
    graph.append(other)
    graph.outputs.append(other.outputs[0])
    replace_input(matmul, 1, add_initializer(graph, "w.new", np.zeros((4, 3), np.float32)))
    assert set(graph.initializers) == {"w", "w.new"}
    graph.outputs.pop()
    graph.remove(other, safe=True)
    graph.outputs.append(weight)  # an initializer that is also a graph output stays
    replace_input(matmul, 1, add_initializer(graph, "w.newer", np.zeros((4, 3), np.float32)))
    assert "w" in graph.initializers and "w.new" not in graph.initializers
