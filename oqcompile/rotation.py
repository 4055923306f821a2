"""Online rotations in the graph: emission as standard ONNX, and recognition of what was emitted.

An online Hadamard ``y = x H_n`` on the last axis, ``n = a * b`` (``H_n = H_a ⊗ H_b``), is
emitted as::

    X = Reshape(x, [..., a, b]);  Y = MatMul(H_aᵀ, MatMul(X, H_b));  y = Reshape(Y, shape(x))

using ``x (A ⊗ B) = vec(Aᵀ X B)`` for row-major ``X``. Its inverse uses ``H_aᵀ, H_bᵀ`` the
other way round. All nodes of one rotation share the name prefix ``<where>/hadamard`` and
carry metadata (``oq.rotation`` = that prefix, ``oq.rotation_size``, ``oq.rotation_inverse``,
``oq.rotation_online``) so that later passes (cancellation, lowering) find them without
pattern guessing, and Netron shows what they are.

DuQuant's block transform ``y = x T``, ``T = B₁ P B₂`` (:mod:`oqcompile.block_rotation`), is
emitted as::

    X = Reshape(Transpose(Reshape(x, [-1, n])), [k, b, -1])             # channels first: [k, b, tokens]
    Z = Gather(Reshape(MatMul(R₁ᵀ[b, b], X), [n, -1]), P, axis=0)        # rows of channels, permuted
    y = Reshape(Transpose(Reshape(MatMul(R₂ᵀ, Reshape(Z, [k, b, -1])), [n, -1])), shape(x))

(channel-major in the middle, so that each MatMul is ``k`` GEMMs of ``b x b`` by ``b x tokens``
and the permutation a Gather of whole rows).
Its nodes carry ``oq.block_rotation`` (their name prefix ``<where>/block_rotation``) and
``oq.block_rotation_size``; structure analysis looks through them
(:func:`oqcompile.structure.matchers.peel_noop`), since a linear that reads ``x T`` with the
weight ``Tᵀ W`` is the same layer.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import onnx_ir as ir

from oqcompile.block_rotation import BlockRotation
from oqcompile.graph import FLOAT_TYPES, NodeMetadata, add_initializer, copy_type
from oqcompile.hadamard import hadamard, kronecker_factors, kronecker_pair

__all__ = ["BlockRotationTag", "Rotation", "RotationTag", "find_rotations", "insert_block_rotation",
           "insert_hadamard", "remove_rotation"]


@dataclasses.dataclass(frozen=True)
class RotationTag(NodeMetadata):
    """On every node of one emitted rotation."""

    KEY = "rotation"
    name: str
    size: int
    inverse: bool
    online: bool  # a quantization point: must stay in the graph


@dataclasses.dataclass(frozen=True)
class BlockRotationTag(NodeMetadata):
    """On every node of one emitted DuQuant block transform."""

    KEY = "block_rotation"
    name: str
    size: int
    block: int


@dataclasses.dataclass(frozen=True)
class Rotation(RotationTag):
    """One emitted rotation found in a graph: ``output = input · M``, ``M = H_n`` or ``H_nᵀ``."""

    nodes: list[ir.Node]
    input: ir.Value
    output: ir.Value

    @property
    def tag(self) -> RotationTag:
        return RotationTag(self.name, self.size, self.inverse, self.online)

    def matrix(self) -> np.ndarray:
        h = hadamard(self.size)
        return h.T if self.inverse else h


def _float_type(value: ir.Value) -> np.dtype:
    """The float type of ``value``; where the exporter recorded none (TorchScript fp16 exports), that
    of a float input its readers take beside it (the weight of the linear it feeds), else float32."""
    if value.dtype is not None:
        return value.dtype.numpy()
    for user in value.consumers():
        for other in user.inputs:
            if other is not None and other is not value and other.dtype in FLOAT_TYPES:
                return other.dtype.numpy()
    return np.dtype(np.float32)


def insert_hadamard(value: ir.Value, size: int, name: str, *, inverse: bool = False,
                    online: bool = True) -> ir.Value:
    """Insert ``value · H_size`` (or ``· H_sizeᵀ``) right after ``value``'s producer; return the new value.

    Every former consumer of ``value`` (graph outputs included) reads the rotated value instead.
    """
    graph = _graph_of(value)
    former_uses = list(value.uses())
    a, b = kronecker_factors(size)
    h_a, h_b = kronecker_pair(size)  # orthonormal factors: H_n = H_a ⊗ H_b
    if inverse:
        h_a, h_b = h_a.T, h_b.T
    dtype = _float_type(value)
    kind = f"{np.dtype(dtype).name}.{size}"
    rotated_name = f"{name}/hadamard{'_inverse' if inverse else ''}"
    tape = ir.tape.Tape()

    def const(tag: str, array: np.ndarray) -> ir.Value:
        key = f"hadamard.{tag}"
        if key in graph.initializers:
            return graph.initializers[key]
        return add_initializer(graph, key, array)

    if a == 1:
        right = const(f"{kind}{'.T' if inverse else ''}", h_b.astype(dtype))
        output = tape.op("MatMul", [value, right], name=f"{rotated_name}/matmul")
    else:
        shape = tape.op("Shape", [value], name=f"{rotated_name}/shape")
        lead = tape.op("Shape", [value], {"end": -1}, name=f"{rotated_name}/lead_shape")
        split = tape.op("Concat", [lead, const(f"split.{a}x{b}", np.array([a, b], np.int64))], {"axis": 0},
                        name=f"{rotated_name}/split_shape")
        reshaped = tape.op("Reshape", [value, split], name=f"{rotated_name}/split")
        right = tape.op("MatMul", [reshaped, const(f"{kind}.{b}{'.T' if inverse else ''}", h_b.astype(dtype))],
                        name=f"{rotated_name}/matmul_right")
        # Left factor applied as MatMul(H_aᵀ, X): for the inverse, (H_aᵀ)ᵀ = H_a.
        left = tape.op("MatMul", [const(f"{kind}.{a}{'' if inverse else '.T'}", h_a.T.astype(dtype)), right],
                       name=f"{rotated_name}/matmul_left")
        output = tape.op("Reshape", [left, shape], name=f"{rotated_name}/merge")
    return _splice(value, output, former_uses, tape, RotationTag(rotated_name, size, inverse, online),
                   f"{'Inverse ' if inverse else ''}Hadamard rotation of size {size} "
                   f"({a}x{b} Kronecker factors) on the last axis, inserted by oqcompile.")


def _splice(value: ir.Value, output: ir.Value, former_uses: list, tape: ir.tape.Tape, tag: NodeMetadata,
            doc: str) -> ir.Value:
    """Put ``tape``'s nodes (which compute ``output`` from ``value``) right after ``value``'s producer,
    tagged and documented; ``former_uses`` of ``value`` and graph outputs read ``output`` instead."""
    graph = value.producer().graph
    output.name = f"{tag.name}/output"
    copy_type(value, output)
    for user, index in former_uses:
        user.replace_input_with(index, output)
    if value.is_graph_output():
        graph.outputs[:] = [output if v is value else v for v in graph.outputs]
    for node in tape.nodes:
        tag.write(node)
        node.doc_string = doc
    graph.insert_after(value.producer(), tape.nodes)
    return output


def insert_block_rotation(value: ir.Value, transform: BlockRotation, name: str) -> ir.Value:
    """Insert ``value · T`` right after ``value``'s producer (module doc); every former use of
    ``value`` (graph outputs included) reads the new value instead, which is returned."""
    graph = _graph_of(value)
    former_uses = list(value.uses())
    dtype = _float_type(value)
    prefix = f"{name}/block_rotation"
    size, block = transform.size, transform.block
    tape = ir.tape.Tape()

    def const(tag: str, array: np.ndarray) -> ir.Value:
        return add_initializer(graph, f"{prefix}.{tag}", array)

    # Channel-major in the middle: each MatMul is k GEMMs (b x b) x (b x tokens), and the
    # permutation a Gather of whole rows.
    rows, columns = const("rows", np.array([-1, size], np.int64)), const("columns", np.array([size, -1], np.int64))
    blocked = const("blocks", np.array([size // block, block, -1], np.int64))
    shape = tape.op("Shape", [value], name=f"{prefix}/shape")
    channels = tape.op("Transpose", [tape.op("Reshape", [value, rows], name=f"{prefix}/flatten")], {"perm": [1, 0]},
                       name=f"{prefix}/to_channels")
    first = tape.op("MatMul", [const("first", transform.first.T.astype(dtype)),
                               tape.op("Reshape", [channels, blocked], name=f"{prefix}/split")],
                    name=f"{prefix}/first")
    permuted = tape.op("Gather", [tape.op("Reshape", [first, columns], name=f"{prefix}/merge_blocks"),
                                  const("permutation", transform.permutation)], {"axis": 0}, name=f"{prefix}/permute")
    second = tape.op("MatMul", [const("second", transform.second.T.astype(dtype)),
                                tape.op("Reshape", [permuted, blocked], name=f"{prefix}/split_again")],
                     name=f"{prefix}/second")
    tokens = tape.op("Transpose", [tape.op("Reshape", [second, columns], name=f"{prefix}/merge_blocks_again")],
                     {"perm": [1, 0]}, name=f"{prefix}/to_tokens")
    output = tape.op("Reshape", [tokens, shape], name=f"{prefix}/merge")
    return _splice(value, output, former_uses, tape, BlockRotationTag(prefix, size, block),
                   f"DuQuant transform of size {size}: rotations of blocks of {block}, a zigzag "
                   "channel permutation, rotations of blocks again; inserted by oqcompile.")


def find_rotations(graph: ir.Graph) -> list[Rotation]:
    """Every rotation emitted by :func:`insert_hadamard`, in graph order."""
    groups: dict[RotationTag, list[ir.Node]] = {}
    for node in graph:
        tag = RotationTag.read(node)
        if tag is not None:
            groups.setdefault(tag, []).append(node)
    return [Rotation(**dataclasses.asdict(tag), nodes=nodes, input=nodes[0].inputs[0], output=nodes[-1].outputs[0])
            for tag, nodes in groups.items()]


def remove_rotation(graph: ir.Graph, rotation: Rotation) -> None:
    """Bypass and delete ``rotation`` (callers make sure the graph stays function-preserving)."""
    rotation.output.replace_all_uses_with(rotation.input, replace_graph_outputs=True)
    graph.remove(rotation.nodes, safe=True)


def _graph_of(value: ir.Value) -> ir.Graph:
    producer = value.producer()
    if producer is None:
        raise ValueError(f"cannot rotate {value.name}: it is not computed inside the graph")
    return producer.graph
