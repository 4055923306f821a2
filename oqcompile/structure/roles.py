"""The roles a pass works on: linears, norms, embeddings, attention, MLP, blocks, the transformer.

Each role holds the nodes and values that implement it and offers the edits passes make
(new weights, biases, norm affines) in ``[in, out]`` layout, whatever the stored layout.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import onnx_ir as ir

from oqcompile import qdq
from oqcompile.errors import OQError
from oqcompile.graph import add_initializer, append_op, const_array, replace_input, transposed_constant
from oqcompile.quant import QuantizedWeight
from oqcompile.weight_math import RotationLike, right_multiplier, wide_rows

__all__ = ["MLP", "Attention", "Block", "Embedding", "Linear", "Norm", "StructureError", "Transformer"]


class StructureError(OQError):
    """The graph does not contain a transformer oqcompile can map."""


@dataclasses.dataclass
class Linear:
    """A linear layer ``y = x W + b`` with a constant weight, ``W`` seen as ``[in, out]``.

    With ``columns = (start, stop)`` the role is those output columns of a packed weight
    (q, k or v of a fused QKV projection, gate or up of a fused one): its weight and bias are
    that slice, edits rewrite the slice inside the packed weight, and ``output`` is the slice of
    the output the graph cuts out (or the packed output, where an op reads it whole).
    """

    name: str
    node: ir.Node  # MatMul or Gemm
    input: ir.Value
    output: ir.Value  # after the bias, if any
    weight_slot: tuple[ir.Node, int]  # where the stored weight constant is plugged in
    transposed: bool  # the stored constant is [out, in]
    bias_slot: tuple[ir.Node, int] | None = None
    columns: tuple[int, int] | None = None

    def column_range(self, name: str, start: int, stop: int, output: ir.Value | None = None) -> Linear:
        """The role ``name`` held by output columns ``[start, stop)`` of this (packed) linear, whose
        own output is ``output`` (the ``Slice``/``Split`` result) where the graph cuts it out."""
        return dataclasses.replace(self, name=name, columns=(start, stop), output=output or self.output)

    @property
    def in_features(self) -> int:
        return self._weight_shape()[0]

    @property
    def out_features(self) -> int:
        if self.columns is not None:
            return self.columns[1] - self.columns[0]
        return self._weight_shape()[1]

    def _weight_shape(self) -> tuple[int, int]:
        """``[in, out]`` from the stored value's shape, without reading (or dequantizing) the weight."""
        shape = self.weight_value().shape
        if shape is None or len(shape) != 2 or not shape.is_static():
            return self._stored_weight().shape
        return (shape[1], shape[0]) if self.transposed else (shape[0], shape[1])

    def _stored_weight(self) -> np.ndarray:
        """The whole stored weight as ``[in, out]`` (all columns of a packed one)."""
        node, index = self.weight_slot
        stored = const_array(node.inputs[index])
        return stored.T if self.transposed else stored

    def weight(self) -> np.ndarray:
        weight = self._stored_weight()
        return weight if self.columns is None else weight[:, self.columns[0]:self.columns[1]]

    def bias(self) -> np.ndarray | None:
        if self.bias_slot is None:
            return None
        node, index = self.bias_slot
        bias = const_array(node.inputs[index])
        return bias if self.columns is None else bias[self.columns[0]:self.columns[1]]

    def weight_value(self) -> ir.Value:
        node, index = self.weight_slot
        return node.inputs[index]

    def set_weight(self, weight: np.ndarray) -> None:
        """Store a new ``[in, out]`` weight (as a new initializer; shared ones are never mutated)."""
        if self.columns is not None:
            weight = _with_columns(self._stored_weight(), self.columns, weight)
        node, index = self.weight_slot
        stored = (weight.T if self.transposed else weight).astype(self._weight_type(), copy=False)
        replace_input(node, index, add_initializer(node.graph, f"{self.name}.weight", stored))

    def set_quantized_weight(self, weight: QuantizedWeight) -> None:
        """Feed the layer from ``DequantizeLinear`` of ``weight``'s codes (:func:`oqcompile.qdq.dequantize_weight`).

        A transposed weight (``Transpose`` node, ``Gemm transB``) is stored ``[in, out]`` from then on.
        """
        if self.columns is not None:
            raise OQError(f"{self.name} is a column range of a packed weight: quantize the packed linear")
        dequantized = qdq.dequantize_weight(self.node, self.name, weight, self.output.dtype or ir.DataType.FLOAT)
        replace_input(self.node, 1, dequantized)
        if self.node.op_type == "Gemm":
            self.node.attributes["transB"] = ir.AttrInt64("transB", 0)
        self.weight_slot, self.transposed = (self.node, 1), False

    def rotate_outputs(self, rotation: RotationLike) -> None:
        """Make the layer emit ``y R``: ``W' = W R``, ``b' = b R`` (formed in a wider float: :func:`wide_rows`)."""
        times = right_multiplier(rotation)
        self.set_weight(wide_rows(self.weight(), times, self._weight_type()))
        if self.bias_slot is not None:
            self.set_bias(times(self.bias().astype(np.float64)[None])[0])

    def rotate_inputs(self, rotation: RotationLike) -> None:
        """Make the layer expect ``x R`` (``R`` orthogonal): ``W' = Rᵀ W``, so ``(x R) W' = x W``
        (formed as ``W'ᵀ = Wᵀ R`` in a wider float: :func:`wide_rows`)."""
        self.set_weight(wide_rows(self.weight().T, right_multiplier(rotation), self._weight_type()).T)

    def set_bias(self, bias: np.ndarray) -> None:
        """Store a new bias, adding an ``Add`` node after the MatMul if there was none."""
        if self.columns is not None:
            whole = (np.zeros(self._weight_shape()[1]) if self.bias_slot is None
                     else const_array(self.bias_slot[0].inputs[self.bias_slot[1]]))
            bias = _with_columns(whole[None], self.columns, bias[None])[0]
        value = add_initializer(self.node.graph, f"{self.name}.bias", bias.astype(self._float_type()))
        if self.bias_slot is not None:
            replace_input(*self.bias_slot, value)
            return
        add = append_op(self.output, "Add", value, f"{self.name}/bias")
        add.outputs[0].name = f"{self.name}.biased"
        self.output, self.bias_slot = add.outputs[0], (add, 1)

    def _weight_type(self) -> np.dtype:
        return self.weight_value().dtype.numpy()

    def _float_type(self) -> np.dtype:
        return (self.output.dtype or self.weight_value().dtype or ir.DataType.FLOAT).numpy()


@dataclasses.dataclass
class Norm:
    """A normalization ``y = normalize(x) * g + b`` over the last axis."""

    name: str
    kind: str  # "rms" or "layer"
    input: ir.Value
    output: ir.Value
    gain_slot: tuple[ir.Node, int] | None  # node and input index holding g
    bias_slot: tuple[ir.Node, int] | None
    fused: bool  # one normalization op (else the decomposed RMS form, gain as a Mul)
    epsilon: float

    def apply_affine(self, scale: np.ndarray, shift: np.ndarray | None = None) -> None:
        """Make the norm emit ``y · scale + shift`` instead of its output ``y``.

        Folded into the gain and bias (``g' = g · scale``, ``β' = β · scale + shift``) where
        the norm has them; otherwise a ``Mul``/``Add`` is appended to its output.
        """
        graph = self.output.producer().graph
        dtype = (self.output.dtype or ir.DataType.FLOAT).numpy()
        gain, bias = self.gain(), self.bias()
        if self.gain_slot is not None:
            replace_input(*self.gain_slot, add_initializer(graph, f"{self.name}.weight",
                                                          (gain.astype(np.float64) * scale).astype(dtype)))
        else:
            scale_value = add_initializer(graph, f"{self.name}.scale", scale.astype(dtype))
            mul = append_op(self.output, "Mul", scale_value, f"{self.name}/scale",
                            "Per-channel scale folded out of the next linears' inputs.")
            self.output, self.gain_slot = mul.outputs[0], (mul, 1)
        new_bias = None if bias is None else bias.astype(np.float64) * scale
        if shift is not None:
            new_bias = shift if new_bias is None else new_bias + shift
        if new_bias is None:
            return
        if self.bias_slot is not None:
            replace_input(*self.bias_slot, add_initializer(graph, f"{self.name}.bias", new_bias.astype(dtype)))
        else:
            shift_value = add_initializer(graph, f"{self.name}.bias", new_bias.astype(dtype))
            add = append_op(self.output, "Add", shift_value, f"{self.name}/shift",
                            "Per-channel shift (OutlierTune symmetrization) added to the norm output.")
            self.output, self.bias_slot = add.outputs[0], (add, 1)

    def gain(self) -> np.ndarray | None:
        return None if self.gain_slot is None else const_array(self.gain_slot[0].inputs[self.gain_slot[1]])

    def bias(self) -> np.ndarray | None:
        return None if self.bias_slot is None else const_array(self.bias_slot[0].inputs[self.bias_slot[1]])

    @property
    def scale_free(self) -> bool:
        """True when the norm applies no gain and no bias (gain all ones, bias absent or zero)."""
        gain, bias = self.gain(), self.bias()
        return (gain is None or bool(np.all(gain == 1))) and (bias is None or not np.any(bias))


@dataclasses.dataclass
class Embedding:
    """A ``Gather`` from a constant ``[rows, hidden]`` table.

    The table may be stored transposed, ``Gather(Transpose(W), ids)`` with ``W`` ``[hidden, rows]``:
    the ONNX Runtime GenAI model builder reads a tied table from the lm_head's weight that way.
    """

    name: str
    node: ir.Node

    def stored_value(self) -> ir.Value:
        """The constant holding the table (behind the ``Transpose``, if any)."""
        return transposed_constant(self.node.inputs[0]) or self.node.inputs[0]

    def _transposed(self) -> bool:
        """Whether the table is stored ``[hidden, rows]`` and read through a ``Transpose``."""
        return self.stored_value() is not self.node.inputs[0]

    def table(self) -> np.ndarray:
        stored = const_array(self.stored_value())
        return stored.T if self._transposed() else stored

    def set_table(self, table: np.ndarray) -> None:
        """Store a new ``[rows, hidden]`` table, read by the ``Gather`` directly."""
        replace_input(self.node, 0, add_initializer(self.node.graph, f"{self.name}.weight",
                                                    table.astype(self.dtype, copy=False)))

    @property
    def dtype(self) -> np.dtype:
        return self.stored_value().dtype.numpy()

    @property
    def rows(self) -> int:
        """The table's row count (the vocabulary), from the stored shape."""
        shape = self.stored_value().shape
        if shape is None or not shape.is_static():
            return self.table().shape[0]
        return shape[1] if self._transposed() else shape[0]

    def rotate(self, rotation: RotationLike) -> None:
        """``E' = E R`` (formed in a wider float): the rows the stream starts from, rotated."""
        self.set_table(wide_rows(self.table(), right_multiplier(rotation), self.dtype))


@dataclasses.dataclass
class Attention:
    """Attention between the q/k/v projections and o_proj.

    Written out as ops (``scores``/``context`` MatMuls, RoPE as Mul/Add), or as one of ONNX
    Runtime's fused ops (``fused``: ``GroupQueryAttention``, ``MultiHeadAttention``) or the ONNX
    ``Attention`` op, which may apply RoPE inside the kernel. With a packed QKV projection
    (``packed``), q, k and v are column ranges of its weight.
    """

    q: Linear
    k: Linear
    v: Linear
    o: Linear
    num_heads: int
    num_kv_heads: int
    head_dim: int
    scores: ir.Node | None  # MatMul(q, k^T); None inside a fused op
    context: ir.Node | None  # MatMul(softmax, v)
    q_rotary: ir.Value | None  # q after RoPE ([..., head_dim] last), None without RoPE or inside a fused op
    k_rotary: ir.Value | None
    fused: ir.Node | None = None
    packed: Linear | None = None

    @property
    def readers(self) -> list[Linear]:
        """The linears reading the attention norm (the packed one once, if packed)."""
        return [self.packed] if self.packed is not None else [self.q, self.k, self.v]

    @property
    def rotary_inside(self) -> bool:
        """RoPE is applied inside the fused op (``do_rotary``), out of the passes' reach."""
        return self.fused is not None and bool(self.fused.attributes.get_int("do_rotary", 0))


@dataclasses.dataclass
class MLP:
    up: Linear  # fc1 when there is no gate
    gate: Linear | None
    down: Linear
    packed: Linear | None = None  # gate and up as column ranges of one projection (Phi-3's gate_up_proj)

    @property
    def readers(self) -> list[Linear]:
        """The linears reading the MLP norm (the packed one once, if packed)."""
        if self.packed is not None:
            return [self.packed]
        return [self.gate, self.up] if self.gate is not None else [self.up]


@dataclasses.dataclass
class Block:
    index: int
    attn_norm: Norm
    attention: Attention
    attn_residual: ir.Node
    mlp_norm: Norm
    mlp: MLP
    mlp_residual: ir.Node
    attn_post_norm: Norm | None = None  # post-norm blocks (Gemma 2/3): o_proj -> norm -> residual add
    mlp_post_norm: Norm | None = None  # down_proj -> norm -> residual add

    @property
    def post_norms(self) -> list[Norm]:
        return [norm for norm in (self.attn_post_norm, self.mlp_post_norm) if norm is not None]


@dataclasses.dataclass
class Transformer:
    embedding: Embedding
    positional: list[Embedding]
    blocks: list[Block]
    final_norm: Norm
    lm_head: Linear

    @property
    def hidden_size(self) -> int:
        return self.embedding.table().shape[1]

    @property
    def tied(self) -> bool:
        """lm_head reads the token embedding table itself."""
        return self.lm_head.weight_value() is self.embedding.stored_value()

    def norms(self) -> list[Norm]:
        return [n for b in self.blocks for n in (b.attn_norm, b.mlp_norm)] + [self.final_norm]

    def linears(self) -> list[Linear]:
        return [lin for b in self.blocks
                for lin in (*b.attention.readers, b.attention.o, *b.mlp.readers, b.mlp.down)
                ] + [self.lm_head]

    def stream_readers(self) -> list[tuple[Norm, list[Linear]]]:
        """Each norm on the residual stream with the linears that read its output."""
        pairs = []
        for b in self.blocks:
            pairs += [(b.attn_norm, b.attention.readers), (b.mlp_norm, b.mlp.readers)]
        return pairs + [(self.final_norm, [self.lm_head])]

    def block_norm_readers(self) -> list[tuple[Norm, list[Linear]]]:
        """:meth:`stream_readers` without the final norm (whose reader, the lm_head, stays float)."""
        return [(norm, readers) for norm, readers in self.stream_readers() if norm is not self.final_norm]

    def stream_writers(self) -> list[Linear]:
        return [w for b in self.blocks for w in (b.attention.o, b.mlp.down)]

    def summary(self) -> dict:
        """A JSON-friendly description of the map (used by ``oqcompile inspect``)."""
        first = self.blocks[0]
        return {
            "hidden_size": self.hidden_size,
            "vocab_size": self.embedding.rows,
            "num_blocks": len(self.blocks),
            "num_heads": first.attention.num_heads,
            "num_kv_heads": first.attention.num_kv_heads,
            "head_dim": first.attention.head_dim,
            "intermediate_size": first.mlp.up.out_features,
            "norm": first.attn_norm.kind + (" (fused op)" if first.attn_norm.fused else " (decomposed)"),
            "attention": first.attention.fused.op_type if first.attention.fused is not None else "ops",
            "rope": ("inside the attention op" if first.attention.rotary_inside
                     else first.attention.q_rotary is not None),
            "gated_mlp": first.mlp.gate is not None,
            "post_norms": bool(first.post_norms),
            "tied_embeddings": self.tied,
            "positional_embeddings": len(self.positional),
            "embedding": self.embedding.node.name,
            "lm_head": _linear_summary(self.lm_head),
            "final_norm": self.final_norm.output.name,
            "blocks": [
                {
                    "attn_norm": b.attn_norm.output.name,
                    **{role: _linear_summary(lin) for role, lin in (
                        ("q", b.attention.q), ("k", b.attention.k), ("v", b.attention.v),
                        ("o", b.attention.o))},
                    "attn_residual": b.attn_residual.name,
                    "mlp_norm": b.mlp_norm.output.name,
                    **({"gate": _linear_summary(b.mlp.gate)} if b.mlp.gate else {}),
                    "up": _linear_summary(b.mlp.up),
                    "down": _linear_summary(b.mlp.down),
                    "mlp_residual": b.mlp_residual.name,
                }
                for b in self.blocks
            ],
        }


def _with_columns(whole: np.ndarray, columns: tuple[int, int], part: np.ndarray) -> np.ndarray:
    """A copy of ``whole`` (``[rows, all columns]``) with columns ``[start, stop)`` set to ``part``."""
    result = np.array(whole)
    result[:, columns[0]:columns[1]] = part
    return result


def _linear_summary(linear: Linear) -> str:
    bias = "+bias" if linear.bias_slot else ""
    columns = f" columns {linear.columns[0]}:{linear.columns[1]}" if linear.columns else ""
    return f"{linear.node.name}{columns} [{linear.in_features}x{linear.out_features}]{bias}"
