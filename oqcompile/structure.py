"""Structure analysis: find the transformer inside an ONNX graph, from the graph alone.

The result, :class:`Transformer`, names every part a pass needs by its *role*: the token
(and positional) embedding, per block the attention norm, q/k/v/o linears, head layout
and RoPE outputs, the MLP norm and its linears, the residual adds, the final norm and
the lm_head. Initializer names are never used; only dataflow is.

How it is found:

1. Every linear is collected: ``MatMul(x, W)``, ``MatMul(x, Transpose(W))`` and
   ``Gemm(x, W, b, transB)`` with a constant 2-D weight, plus a following ``Add`` of a
   constant 1-D bias. Weights are presented as ``[in, out]`` whatever the storage.
2. Every norm is collected: ``LayerNormalization``, ``RMSNormalization``, ORT's
   ``SimplifiedLayerNormalization``, and the decomposed form
   ``x * 1/sqrt(mean(x^2) + eps) [* g]`` (Pow or Mul, Reciprocal or Div).
3. The residual stream is walked from the token embedding ``Gather``: each stream value
   is read by a norm and by a residual ``Add`` whose other operand is the output of a
   linear (the sub-layer's *writer*). Linears reading the norm's output are the
   sub-layer's *readers*. A sub-layer containing score/context MatMuls between two
   activations is attention (q reaches the score MatMul's left input, k its right input,
   v the context MatMul's right input); otherwise it is the MLP (the reader feeding the
   activation function is the gate). The stream value read by a norm but by no residual
   ``Add`` is the final norm's input; the linear reading that norm is the lm_head.

Exporters may put ``Cast``/``Identity`` nodes anywhere; they are looked through.
"""

from __future__ import annotations

import dataclasses
from collections import deque

import numpy as np
import onnx_ir as ir

from oqcompile.errors import OQError
from oqcompile.quant import QuantizedWeight
from oqcompile.graph import (LAYOUT_OPS, add_initializer, append_op, const_array, is_const,
                             peel_consumers, peel_noop, producer_op)

__all__ = ["Attention", "Block", "Embedding", "Linear", "MLP", "Norm", "StructureError", "match_linear",
           "Transformer", "analyze"]


class StructureError(OQError):
    """The graph does not contain a transformer oqcompile can map."""


@dataclasses.dataclass
class Linear:
    """A linear layer ``y = x W + b`` with a constant weight, ``W`` seen as ``[in, out]``."""

    name: str
    node: ir.Node  # MatMul or Gemm
    input: ir.Value
    output: ir.Value  # after the bias, if any
    weight_slot: tuple[ir.Node, int]  # where the stored weight constant is plugged in
    transposed: bool  # the stored constant is [out, in]
    bias_slot: tuple[ir.Node, int] | None = None

    @property
    def in_features(self) -> int:
        return self.weight().shape[0]

    @property
    def out_features(self) -> int:
        return self.weight().shape[1]

    def weight(self) -> np.ndarray:
        node, index = self.weight_slot
        stored = const_array(node.inputs[index])
        return stored.T if self.transposed else stored

    def bias(self) -> np.ndarray | None:
        if self.bias_slot is None:
            return None
        node, index = self.bias_slot
        return const_array(node.inputs[index])

    def weight_value(self) -> ir.Value:
        node, index = self.weight_slot
        return node.inputs[index]

    def set_weight(self, weight: np.ndarray) -> None:
        """Store a new ``[in, out]`` weight (as a new initializer; shared ones are never mutated)."""
        node, index = self.weight_slot
        dtype = self.weight_value().dtype.numpy()
        stored = (weight.T if self.transposed else weight).astype(dtype)
        node.replace_input_with(index, add_initializer(node.graph, f"{self.name}.weight", stored))

    @property
    def quantized(self) -> bool:
        """The weight is ``DequantizeLinear`` of integer codes (see :meth:`set_quantized_weight`)."""
        return producer_op(self.weight_value()) == "DequantizeLinear"

    def set_quantized_weight(self, weight: QuantizedWeight) -> None:
        """Feed the layer from ``DequantizeLinear(codes [in, out], scales)``.

        Per output channel: scales ``[out]`` on ``axis=1``; groups: scales ``[in/g, out]``
        with ``axis=0, block_size=g``. 4-bit codes are stored as INT4, 6- and 8-bit codes as
        INT8. A transposed weight (``Transpose`` node, ``Gemm transB``) is stored ``[in, out]``.
        """
        graph = self.node.graph
        float_type = self.output.dtype or ir.DataType.FLOAT
        codes = add_initializer(graph, f"{self.name}.weight_int{weight.bits}", weight.codes,
                                ir.DataType.INT4 if weight.bits == 4 else ir.DataType.INT8)
        if weight.group is None:
            scales, attributes = weight.scales[0], {"axis": 1}
        else:
            scales, attributes = weight.scales, {"axis": 0, "block_size": weight.group}
        scales = add_initializer(graph, f"{self.name}.weight_scale", scales.astype(float_type.numpy()))
        dequantize = ir.node("DequantizeLinear", [codes, scales], attributes=attributes,
                             name=f"{self.name}/dequantize_weight")
        dequantize.doc_string = (f"int{weight.bits} weight of {self.name}, "
                                 + ("one scale per output channel." if weight.group is None
                                    else f"one scale per {weight.group} input rows per output channel."))
        dequantize.outputs[0].name = f"{self.name}.weight_dequantized"
        dequantize.outputs[0].dtype = float_type
        dequantize.outputs[0].shape = ir.Shape(weight.codes.shape)
        graph.insert_before(self.node, dequantize)
        self.node.replace_input_with(1, dequantize.outputs[0])
        if self.node.op_type == "Gemm":
            self.node.attributes["transB"] = ir.AttrInt64("transB", 0)
        self.weight_slot, self.transposed = (self.node, 1), False

    def rotate_outputs(self, rotation: np.ndarray) -> None:
        """Make the layer emit ``y R``: ``W' = W R``, ``b' = b R`` (formed in float64)."""
        self.set_weight(self.weight().astype(np.float64) @ rotation)
        if self.bias_slot is not None:
            self.set_bias(self.bias().astype(np.float64) @ rotation)

    def rotate_inputs(self, rotation: np.ndarray) -> None:
        """Make the layer expect ``x R`` (``R`` orthogonal): ``W' = Rᵀ W``, so ``(x R) W' = x W``."""
        self.set_weight(rotation.T @ self.weight().astype(np.float64))

    def set_bias(self, bias: np.ndarray) -> None:
        """Store a new bias, adding an ``Add`` node after the MatMul if there was none."""
        value = add_initializer(self.node.graph, f"{self.name}.bias", bias.astype(self._float_type()))
        if self.bias_slot is not None:
            node, index = self.bias_slot
            node.replace_input_with(index, value)
            return
        add = append_op(self.output, "Add", value, f"{self.name}/bias")
        add.outputs[0].name = f"{self.name}.biased"
        self.output, self.bias_slot = add.outputs[0], (add, 1)

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
            node, index = self.gain_slot
            node.replace_input_with(index, add_initializer(graph, f"{self.name}.weight",
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
            node, index = self.bias_slot
            node.replace_input_with(index, add_initializer(graph, f"{self.name}.bias", new_bias.astype(dtype)))
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
    """A ``Gather`` from a constant ``[rows, hidden]`` table."""

    name: str
    node: ir.Node

    def table(self) -> np.ndarray:
        return const_array(self.node.inputs[0])

    def set_table(self, table: np.ndarray) -> None:
        dtype = self.node.inputs[0].dtype.numpy()
        self.node.replace_input_with(0, add_initializer(self.node.graph, f"{self.name}.weight",
                                                        table.astype(dtype)))


@dataclasses.dataclass
class Attention:
    q: Linear
    k: Linear
    v: Linear
    o: Linear
    num_heads: int
    num_kv_heads: int
    head_dim: int
    scores: ir.Node  # MatMul(q, k^T)
    context: ir.Node  # MatMul(softmax, v)
    q_rotary: ir.Value | None  # q after RoPE ([..., head_dim] last), None without RoPE
    k_rotary: ir.Value | None

    @property
    def readers(self) -> list[Linear]:
        return [self.q, self.k, self.v]

    @property
    def writer(self) -> Linear:
        return self.o


@dataclasses.dataclass
class MLP:
    up: Linear  # fc1 when there is no gate
    gate: Linear | None
    down: Linear

    @property
    def readers(self) -> list[Linear]:
        return [self.gate, self.up] if self.gate is not None else [self.up]

    @property
    def writer(self) -> Linear:
        return self.down


@dataclasses.dataclass
class Block:
    index: int
    attn_norm: Norm
    attention: Attention
    attn_residual: ir.Node
    mlp_norm: Norm
    mlp: MLP
    mlp_residual: ir.Node


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
        return self.lm_head.weight_value() is self.embedding.node.inputs[0]

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
            "vocab_size": int(self.embedding.table().shape[0]),
            "num_blocks": len(self.blocks),
            "num_heads": first.attention.num_heads,
            "num_kv_heads": first.attention.num_kv_heads,
            "head_dim": first.attention.head_dim,
            "intermediate_size": first.mlp.up.out_features,
            "norm": first.attn_norm.kind + (" (fused op)" if first.attn_norm.fused else " (decomposed)"),
            "rope": first.attention.q_rotary is not None,
            "gated_mlp": first.mlp.gate is not None,
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


def _linear_summary(linear: Linear) -> str:
    bias = "+bias" if linear.bias_slot else ""
    return f"{linear.node.name} [{linear.in_features}x{linear.out_features}]{bias}"


def analyze(model: ir.Model) -> Transformer:
    """Map the transformer in ``model`` (raises :class:`StructureError` naming what is missing)."""
    return _Analyzer(model.graph).run()


class _Analyzer:
    def __init__(self, graph: ir.Graph):
        self.graph = graph
        self.linears_by_output: dict[int, Linear] = {}
        self.linears_by_input: dict[int, list[Linear]] = {}
        for node in graph:
            linear = match_linear(node)
            if linear is not None:
                self.linears_by_output[id(linear.output)] = linear
                self.linears_by_input.setdefault(id(peel_noop(linear.input)), []).append(linear)
        self.norms_by_input: dict[int, Norm] = {}
        for node in graph:
            norm = _match_norm(node)
            if norm is not None:
                self.norms_by_input[id(norm.input)] = norm

    def run(self) -> Transformer:
        if not self.linears_by_output:
            raise StructureError("no linear layer (MatMul/Gemm with a constant weight) in the graph: "
                                 "not a transformer language model")
        embedding = self._token_embedding()
        stream, positional = self._stream_start(embedding)
        blocks = []
        while True:
            norm = self._norm_reading(stream, len(blocks))
            readers = self._readers(norm)
            residual, writer = self._residual(stream)
            if residual is None:
                break
            sublayer = self._sublayer(readers, writer)
            if isinstance(sublayer, Attention):
                if blocks and blocks[-1].mlp is None:
                    raise StructureError(f"two attention sub-layers in a row at {residual.name}")
                blocks.append(Block(len(blocks), norm, sublayer, residual, None, None, None))
            else:
                if not blocks or blocks[-1].mlp is not None:
                    raise StructureError(f"MLP without a preceding attention at {residual.name}")
                blocks[-1].mlp_norm, blocks[-1].mlp, blocks[-1].mlp_residual = norm, sublayer, residual
            stream = residual.outputs[0]
        if not blocks or blocks[-1].mlp is None:
            raise StructureError("no complete transformer block (attention + MLP with residual adds) found")
        if len(readers) != 1:
            raise StructureError(f"final norm {norm.output.name} is read by {len(readers)} linears, "
                                 "expected exactly one lm_head")
        _name_roles(blocks, norm, readers[0])
        embedding.name = "embed_tokens"
        return Transformer(embedding, positional, blocks, norm, readers[0])

    # -- stream -------------------------------------------------------------------------

    def _token_embedding(self) -> Embedding:
        graph_inputs = {id(v) for v in self.graph.inputs}
        for node in self.graph:
            if (node.op_type == "Gather" and node.attributes.get_int("axis", 0) == 0
                    and _const_ndim(node.inputs[0]) == 2
                    and id(_peel_index_reshapes(node.inputs[1])) in graph_inputs):
                return Embedding("embed_tokens", node)
        raise StructureError("no token embedding (Gather from a constant table indexed by a graph "
                             "input) found: not a language model graph")

    def _stream_start(self, embedding: Embedding) -> tuple[ir.Value, list[Embedding]]:
        value, positional = embedding.node.outputs[0], []
        while id(peel_noop(value)) not in self.norms_by_input:
            users = [n for n in value.consumers() if n.op_type not in ("Shape", "Size")]
            if len(users) != 1:
                raise StructureError(f"the token embedding output {value.name} does not lead to a norm")
            node = users[0]
            if node.op_type == "Add":
                other = node.inputs[1] if node.inputs[0] is value else node.inputs[0]
                gather = _find_positional_gather(other)
                if gather is None:
                    raise StructureError(f"{node.name} adds something other than a positional "
                                         "embedding to the token embedding")
                positional.append(Embedding("embed_positions", gather))
            elif not (node.op_type in ("Cast", "Identity")
                      or (node.op_type == "Mul" and any(_is_scalar_const(i) for i in node.inputs))):
                raise StructureError(f"unexpected {node.op_type} node {node.name} between the token "
                                     "embedding and the first norm")
            value = node.outputs[0]
        return value, positional

    def _norm_reading(self, stream: ir.Value, block: int) -> Norm:
        norm = self.norms_by_input.get(id(peel_noop(stream)))
        if norm is None:
            raise StructureError(f"no norm reads the residual stream value {stream.name} (after "
                                 f"{block // 2} blocks): post-norm or parallel blocks are not supported")
        return norm

    def _readers(self, norm: Norm) -> list[Linear]:
        readers = self.linears_by_input.get(id(peel_noop(norm.output)), [])
        if not readers:
            raise StructureError(f"no linear reads the output of norm {norm.output.name}")
        return readers

    def _residual(self, stream: ir.Value) -> tuple[ir.Node | None, Linear | None]:
        for node in peel_consumers(stream):
            if node.op_type != "Add":
                continue
            other = node.inputs[1] if peel_noop(node.inputs[0]) is stream else node.inputs[0]
            writer = self.linears_by_output.get(id(peel_noop(other)))
            if writer is not None:
                return node, writer
        return None, None

    # -- sub-layers ----------------------------------------------------------------------

    def _sublayer(self, readers: list[Linear], writer: Linear):
        hits = {id(r): _dynamic_matmul_hits(r.output, writer.node) for r in readers}
        if not any(hits.values()):
            return self._mlp(readers, writer)
        return self._attention(readers, writer, hits)

    def _mlp(self, readers: list[Linear], writer: Linear) -> MLP:
        if len(readers) == 1:
            return MLP(up=readers[0], gate=None, down=writer)
        if len(readers) != 2:
            raise StructureError(f"MLP before {writer.node.name} has {len(readers)} input linears")
        feeds_activation = [any(n.op_type != "Mul" for n in peel_consumers(r.output)) for r in readers]
        if feeds_activation.count(True) != 1:
            raise StructureError(f"cannot tell the gate from the up projection before {writer.node.name}")
        gate = readers[feeds_activation.index(True)]
        up = readers[feeds_activation.index(False)]
        return MLP(up=up, gate=gate, down=writer)

    def _attention(self, readers, writer, hits) -> Attention:
        roles: dict[str, Linear] = {}
        scores = context = None
        for reader in readers:
            reached = hits[id(reader)]
            if len(reached) != 1:
                raise StructureError(f"{reader.node.name} feeds several attention MatMuls: fused QKV "
                                     "projections are not supported")
            (matmul, slot), = reached
            is_scores = _feeds_softmax(matmul)
            role = ("q" if slot == 0 else "k") if is_scores else ("v" if slot == 1 else None)
            if role is None or role in roles:
                raise StructureError(f"cannot assign {reader.node.name} to q, k or v")
            roles[role] = reader
            if is_scores:
                scores = matmul
            else:
                context = matmul
        if set(roles) != {"q", "k", "v"}:
            raise StructureError(f"attention before {writer.node.name} lacks a "
                                 f"{'/'.join(sorted({'q', 'k', 'v'} - set(roles)))} projection")
        head_dim = _head_dim(scores, roles["q"])
        q, k, v = roles["q"], roles["k"], roles["v"]
        return Attention(
            q=q, k=k, v=v, o=writer,
            num_heads=q.out_features // head_dim, num_kv_heads=k.out_features // head_dim,
            head_dim=head_dim, scores=scores, context=context,
            q_rotary=_rope_output(q), k_rotary=_rope_output(k))


# -- matching single layers -------------------------------------------------------------


def match_linear(node: ir.Node) -> Linear | None:
    """``node`` seen as a linear layer (MatMul/Gemm with a constant 2-D weight), else ``None``."""
    if node.op_type == "MatMul" and node.domain == "":
        weight_input = node.inputs[1]
        if is_const(node.inputs[0]) or weight_input is None:
            return None
        producer = weight_input.producer()
        if _is_stored_weight(weight_input):
            slot, transposed = (node, 1), False
        elif (producer is not None and producer.op_type == "Transpose" and is_const(producer.inputs[0])
              and tuple(producer.attributes.get_ints("perm", (1, 0))) == (1, 0)):
            slot, transposed = (producer, 0), True
        else:
            return None
        if _const_ndim(slot[0].inputs[slot[1]]) != 2:
            return None
        linear = Linear("", node, node.inputs[0], node.outputs[0], slot, transposed)
    elif node.op_type == "Gemm" and node.domain == "":
        if (node.attributes.get_int("transA", 0) or node.attributes.get_float("alpha", 1.0) != 1.0
                or node.attributes.get_float("beta", 1.0) != 1.0 or not _is_stored_weight(node.inputs[1])):
            return None
        linear = Linear("", node, node.inputs[0], node.outputs[0], (node, 1),
                        bool(node.attributes.get_int("transB", 0)))
        if len(node.inputs) > 2 and node.inputs[2] is not None:
            linear.bias_slot = (node, 2)
            return linear
    else:
        return None
    users = linear.output.consumers()
    if len(users) == 1 and users[0].op_type == "Add":
        add = users[0]
        index = 1 if add.inputs[0] is linear.output else 0
        bias = const_array(add.inputs[index])
        if bias is not None and bias.ndim == 1 and bias.shape[0] == linear.out_features:
            linear.output, linear.bias_slot = add.outputs[0], (add, index)
    return linear


def _is_stored_weight(value: ir.Value) -> bool:
    """An initializer, a ``Constant``, or ``DequantizeLinear`` of constant integer codes."""
    return (value.const_value is not None or producer_op(value) == "Constant"
            or (producer_op(value) == "DequantizeLinear" and is_const(value)))


def _match_norm(node: ir.Node) -> Norm | None:
    op = node.op_type
    if op == "LayerNormalization" or op in ("RMSNormalization", "SimplifiedLayerNormalization"):
        if node.attributes.get_int("axis", -1) != -1:
            return None
        bias_slot = (node, 2) if len(node.inputs) > 2 and node.inputs[2] is not None else None
        output = node.outputs[0]
        if bias_slot is None:
            output, bias_slot = _trailing_bias(output)
        return Norm("", "layer" if op == "LayerNormalization" else "rms", peel_noop(node.inputs[0]),
                    output, (node, 1), bias_slot, True, node.attributes.get_float("epsilon", 1e-5))
    if op != "ReduceMean":
        return None
    return _match_decomposed_rms(node)


def _match_decomposed_rms(mean: ir.Node) -> Norm | None:
    """``x * 1/sqrt(mean(x^2) + eps) [* g]`` anchored at its ReduceMean."""
    square = mean.inputs[0].producer()
    if square is None:
        return None
    if square.op_type == "Pow" and _scalar_value(square.inputs[1]) == 2.0:
        x = peel_noop(square.inputs[0])
    elif square.op_type == "Mul" and square.inputs[0] is square.inputs[1]:
        x = peel_noop(square.inputs[0])
    else:
        return None
    add = _only_consumer(mean.outputs[0], "Add")
    if add is None:
        return None
    epsilon = _scalar_value(add.inputs[1] if add.inputs[0] is mean.outputs[0] else add.inputs[0])
    sqrt = _only_consumer(add.outputs[0], "Sqrt")
    if epsilon is None or sqrt is None:
        return None
    normalized = None
    for node in sqrt.outputs[0].consumers():
        if node.op_type == "Div" and node.inputs[1] is sqrt.outputs[0] and peel_noop(node.inputs[0]) is x:
            normalized = node.outputs[0]
        elif node.op_type in ("Reciprocal", "Div"):
            if node.op_type == "Div" and _scalar_value(node.inputs[0]) != 1.0:
                continue
            for mul in node.outputs[0].consumers():
                if mul.op_type == "Mul" and any(peel_noop(i) is x for i in mul.inputs):
                    normalized = mul.outputs[0]
    if normalized is None:
        return None
    output, gain_slot = normalized, None
    while (cast := _only_consumer(output, "Cast")) is not None:
        output = cast.outputs[0]
    mul = _only_consumer(output, "Mul")
    if mul is not None:
        index = 0 if mul.inputs[1] is output else 1
        gain = const_array(mul.inputs[index])
        if gain is not None and gain.ndim == 1:
            output, gain_slot = mul.outputs[0], (mul, index)
    if gain_slot is None:
        output = normalized
    output, bias_slot = _trailing_bias(output)
    return Norm("", "rms", x, output, gain_slot, bias_slot, False, float(epsilon))


def _trailing_bias(output: ir.Value) -> tuple[ir.Value, tuple[ir.Node, int] | None]:
    """A norm output followed by ``Add`` of a constant vector (e.g. OutlierTune's shift) has that bias."""
    add = _only_consumer(output, "Add")
    if add is not None and len(output.consumers()) == 1:
        index = 1 if add.inputs[0] is output else 0
        bias = const_array(add.inputs[index])
        width = output.shape[-1] if output.shape is not None and len(output.shape) else None
        if bias is not None and bias.ndim == 1 and (not isinstance(width, int) or width == bias.shape[0]):
            return add.outputs[0], (add, index)
    return output, None


# -- attention details --------------------------------------------------------------------


def _dynamic_matmul_hits(start: ir.Value, writer: ir.Node) -> set[tuple[ir.Node, int]]:
    """The first MatMuls between two activations reached from ``start`` (node, input slot)."""
    hits, seen, queue = set(), set(), deque([start])
    while queue:
        value = queue.popleft()
        for node in value.consumers():
            if id(node) in seen or node is writer:
                continue
            seen.add(id(node))
            if node.op_type == "MatMul" and not is_const(node.inputs[0]) and not is_const(node.inputs[1]):
                hits.add((node, 0 if node.inputs[0] is value else 1))
                continue
            if node.op_type in ("Shape", "Size"):
                continue
            queue.extend(node.outputs)
        if len(seen) > 500:
            break
    return hits


def _feeds_softmax(matmul: ir.Node) -> bool:
    queue, steps = deque([matmul.outputs[0]]), 0
    while queue and steps < 20:
        steps += 1
        for node in queue.popleft().consumers():
            if node.op_type == "Softmax":
                return True
            if node.op_type in ("Mul", "Div", "Add", "Where", "Cast", "Sub", "Tanh", "Identity"):
                queue.extend(node.outputs)
    return False


def _head_dim(scores: ir.Node, q: Linear) -> int:
    """Head size: the score MatMul's static last dim, else the target of the head-splitting Reshape."""
    shape = scores.inputs[0].shape
    if shape is not None and len(shape) >= 1 and isinstance(shape[-1], int):
        return shape[-1]
    value = q.output
    for _ in range(5):
        users = [n for n in value.consumers() if n.op_type in LAYOUT_OPS or _is_scalar_scaling(n)]
        if not users:
            break
        node = users[0]
        if node.op_type == "Reshape":
            target = node.inputs[1]
            last = const_array(target)
            if last is None and producer_op(target) == "Concat":
                last = const_array(target.producer().inputs[-1])
            if last is not None and last.reshape(-1)[-1] > 0:
                return int(last.reshape(-1)[-1])
        shape = node.outputs[0].shape
        if shape is not None and len(shape) == 4 and isinstance(shape[-1], int):
            return shape[-1]
        value = node.outputs[0]
    raise StructureError(f"cannot find the head size of the attention fed by {q.node.name}")


def _rope_output(projection: Linear) -> ir.Value | None:
    """The RoPE ``Add(x*cos, rotate_half(x)*sin)`` fed by a q or k projection (after its head split)."""
    value = projection.output
    for _ in range(8):
        users = [n for n in value.consumers() if n.op_type not in ("Shape", "Size")]
        for mul in users:
            if mul.op_type != "Mul":
                continue
            for add in mul.outputs[0].consumers():
                if add.op_type == "Add" and all(producer_op(i) == "Mul" for i in add.inputs):
                    return add.outputs[0]
        layout = [n for n in users if n.op_type in LAYOUT_OPS]
        if len(layout) != 1:
            return None
        value = layout[0].outputs[0]
    return None


# -- small helpers --------------------------------------------------------------------------


def _peel_index_reshapes(value: ir.Value) -> ir.Value:
    while (node := value.producer()) is not None and node.op_type in (
            "Reshape", "Cast", "Identity", "Unsqueeze", "Squeeze"):
        value = node.inputs[0]
    return value


def _find_positional_gather(value: ir.Value) -> ir.Node | None:
    value = peel_noop(value)
    node = value.producer()
    if node is not None and node.op_type == "Gather" and _const_ndim(node.inputs[0]) == 2:
        return node
    return None


def _const_ndim(value: ir.Value | None) -> int | None:
    if value is None:
        return None
    if value.const_value is not None:
        return len(value.const_value.shape)
    array = const_array(value)
    return None if array is None else array.ndim


def _scalar_value(value: ir.Value | None) -> float | None:
    array = const_array(value)
    if array is None or array.size != 1:
        return None
    return float(array.reshape(()))


def _is_scalar_const(value: ir.Value | None) -> bool:
    return _scalar_value(value) is not None


def _is_scalar_scaling(node: ir.Node) -> bool:
    """``x * c`` or ``x / c`` with a constant scalar ``c`` (OPT scales q before the head split)."""
    return node.op_type in ("Mul", "Div") and _is_scalar_const(node.inputs[1])


def _only_consumer(value: ir.Value, op_type: str) -> ir.Node | None:
    users = [n for n in value.consumers() if n.op_type == op_type]
    return users[0] if len(users) == 1 else None


def _name_roles(blocks: list[Block], final_norm: Norm, lm_head: Linear) -> None:
    for b in blocks:
        prefix = f"layers.{b.index}"
        b.attn_norm.name = f"{prefix}.input_layernorm"
        b.mlp_norm.name = f"{prefix}.post_attention_layernorm"
        for role, lin in (("q_proj", b.attention.q), ("k_proj", b.attention.k),
                          ("v_proj", b.attention.v), ("o_proj", b.attention.o)):
            lin.name = f"{prefix}.self_attn.{role}"
        gated = b.mlp.gate is not None
        b.mlp.up.name = f"{prefix}.mlp.{'up_proj' if gated else 'fc1'}"
        b.mlp.down.name = f"{prefix}.mlp.{'down_proj' if gated else 'fc2'}"
        if gated:
            b.mlp.gate.name = f"{prefix}.mlp.gate_proj"
    final_norm.name = "norm"
    lm_head.name = "lm_head"
