"""The residual-stream walk: from the token embedding through every block to the lm_head.

Each stream value is read by a norm and by a residual ``Add`` whose other operand is the output
of a linear (the sub-layer's *writer*); the linears reading the norm's output are the
sub-layer's *readers*. A sub-layer with score/context MatMuls between two activations is
attention, any other the MLP. The stream value read by a norm but by no residual ``Add`` is
the final norm's input; the linear reading that norm is the lm_head. In a post-norm block
(Gemma 2/3) a norm sits between the writer and the residual ``Add``. Roles are then named as
in Hugging Face LLaMA (``layers.3.mlp.down_proj``).
"""

from __future__ import annotations

import onnx_ir as ir

from oqcompile.graph import is_const, transposed_constant
from oqcompile.structure.matchers import (SKIP_NORMS, column_views, const_ndim, dynamic_matmul_hits, feeds_softmax,
                                          find_head_dim, is_fused_attention, is_scalar_const, match_linear, match_norm,
                                          peel_consumers, peel_index_reshapes, peel_noop, positional_gather, rope_output)
from oqcompile.structure.roles import MLP, Attention, Block, Embedding, Linear, Norm, StructureError, Transformer

__all__ = ["analyze"]

# Integer kernels of ONNX Runtime's own quantizers (quantize_dynamic, quantize_static in QOperator
# form, the MatMulNBits quantizer, the GenAI builder's int4): what only an already-quantized model holds.
_INTEGER_KERNELS = {("", "MatMulInteger"), ("", "QLinearMatMul"), ("", "ConvInteger"), ("", "QLinearConv"),
                    ("com.microsoft", "DynamicQuantizeMatMul"), ("com.microsoft", "MatMulIntegerToFloat"),
                    ("com.microsoft", "QGemm"), ("com.microsoft", "QAttention"), ("com.microsoft", "MatMulNBits"),
                    ("com.microsoft", "GatherBlockQuantized")}

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
        self.norms_by_output: dict[int, Norm] = {}
        for node in graph:
            norm = match_norm(node)
            if norm is not None:
                self.norms_by_input[id(norm.input)] = norm
                self.norms_by_output[id(norm.output)] = norm

    def run(self) -> Transformer:
        for node in self.graph:
            if (node.domain, node.op_type) == ("oq", "QMatMul"):
                raise StructureError(f"QMatMul {node.name}: the model is already quantized and lowered by oqcompile; "
                                     "compile the float model it came from")
            if (node.domain, node.op_type) in _INTEGER_KERNELS:
                genai = node.op_type in ("MatMulNBits", "GatherBlockQuantized")
                raise StructureError(f"{node.op_type} {node.name}: the model is already quantized (an integer "
                                     "kernel of ONNX Runtime's quantizers); oqcompile rewrites float weights: give "
                                     "it the float model" + (" (the GenAI builder's -p fp32)" if genai else ""))
            if node.domain != "com.microsoft":
                continue
            if node.op_type in SKIP_NORMS:
                raise StructureError(f"{node.op_type} {node.name} fuses a residual add with a norm: split it "
                                     "first (the split_skip_norms pass; optimize and inspect do this themselves)")
            if node.op_type in ("FusedGemm", "FusedMatMul") and is_const(node.inputs[1]):
                raise StructureError(f"{node.op_type} {node.name} fuses a linear with the op after it: split it "
                                     "first (the split_fused_linears pass; optimize and inspect do this themselves)")
            if node.op_type == "Attention":
                raise StructureError(f"ONNX Runtime's Attention {node.name} holds the q/k/v weights inside the "
                                     "op: export without ORT's attention fusion (GroupQueryAttention and "
                                     "MultiHeadAttention are read)")
        if not self.linears_by_output:
            raise StructureError("no linear layer (MatMul/Gemm with a constant weight) in the graph: "
                                 "not a transformer language model")
        embedding = self._token_embedding()
        stream, positional = self._stream_start(embedding)
        blocks = []
        while True:
            norm = self._norm_reading(stream, len(blocks))
            readers = self._readers(norm)
            residual, writer, post_norm = self._residual(stream)
            if residual is None:
                break
            sublayer = self._sublayer(readers, writer)
            if isinstance(sublayer, Attention):
                if blocks and blocks[-1].mlp is None:
                    raise StructureError(f"two attention sub-layers in a row at {residual.name}")
                blocks.append(Block(len(blocks), norm, sublayer, residual, None, None, None,
                                    attn_post_norm=post_norm))
            else:
                if not blocks or blocks[-1].mlp is not None:
                    raise StructureError(f"MLP without a preceding attention at {residual.name}")
                block = blocks[-1]
                block.mlp_norm, block.mlp, block.mlp_residual, block.mlp_post_norm = norm, sublayer, residual, post_norm
            stream = residual.outputs[0]
        if not blocks or blocks[-1].mlp is None:
            post_norm = not blocks and any(node.op_type == "Add" for node in peel_consumers(norm.output))
            raise StructureError("no complete transformer block (attention + MLP with residual adds) found" + (
                f": the residual stream runs through {norm.output.producer().name}, a norm after the residual add (post-norm, as "
                "in BERT); oqcompile reads pre-norm decoders, whose norms branch off the stream" if post_norm
                else ""))
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
                    and const_ndim(transposed_constant(node.inputs[0]) or node.inputs[0]) == 2
                    and id(peel_index_reshapes(node.inputs[1])) in graph_inputs):
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
                gather = positional_gather(other)
                if gather is None:
                    raise StructureError(f"{node.name} adds something other than a positional "
                                         "embedding to the token embedding")
                positional.append(Embedding("embed_positions", gather))
            elif not (node.op_type in ("Cast", "Identity", "DequantizeLinear")  # quantize_embedding's rows
                      or (node.op_type == "Mul" and any(is_scalar_const(i) for i in node.inputs))):
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

    def _residual(self, stream: ir.Value) -> tuple[ir.Node | None, Linear | None, Norm | None]:
        """The residual ``Add`` on ``stream``, the linear writing into it and, in a post-norm block
        (Gemma 2/3), the norm between the two."""
        for node in peel_consumers(stream):
            if node.op_type != "Add":
                continue
            other = peel_noop(node.inputs[1] if peel_noop(node.inputs[0]) is stream else node.inputs[0])
            post_norm = self.norms_by_output.get(id(other))
            writer = self.linears_by_output.get(id(other if post_norm is None else peel_noop(post_norm.input)))
            if writer is not None:
                return node, writer, post_norm
        return None, None, None

    # -- sub-layers ----------------------------------------------------------------------

    def _sublayer(self, readers: list[Linear], writer: Linear):
        hits = {id(r): dynamic_matmul_hits(r.output, writer.node) for r in readers}
        if not any(hits.values()):
            return self._mlp(readers, writer)
        if any(is_fused_attention(node) for reached in hits.values() for node, _ in reached):
            return self._fused_attention(readers, writer, hits)
        return self._attention(readers, writer, hits)

    def _mlp(self, readers: list[Linear], writer: Linear) -> MLP:
        packed = None
        if len(readers) == 1:
            views = column_views(readers[0])
            if views is None or len(views) != 2:
                return MLP(up=readers[0], gate=None, down=writer)
            packed, readers = readers[0], views
        if len(readers) != 2:
            raise StructureError(f"MLP before {writer.node.name} has {len(readers)} input linears")
        feeds_activation = [any(n.op_type != "Mul" for n in peel_consumers(r.output)) for r in readers]
        if feeds_activation.count(True) != 1:
            raise StructureError(f"cannot tell the gate from the up projection before {writer.node.name}")
        gate = readers[feeds_activation.index(True)]
        up = readers[feeds_activation.index(False)]
        return MLP(up=up, gate=gate, down=writer, packed=packed)

    def _sources(self, readers: list[Linear], writer: Linear, hits) -> tuple[list, Linear | None]:
        """Each q/k/v candidate with the one attention input it reaches ``(linear, (node, slot))``; a
        reader reaching several is replaced by the column ranges its output is cut into by
        ``Slice``/``Split`` (a packed QKV projection, returned second)."""
        sources, packed = [], None
        for reader in readers:
            if len(hits[id(reader)]) <= 1:
                sources.append((reader, hits[id(reader)]))
                continue
            views = column_views(reader)
            if views is None or len(readers) != 1:
                raise StructureError(f"{reader.node.name} feeds several attention inputs and its output is "
                                     "not cut into q, k and v by Slice/Split on the last axis")
            packed = reader
            sources += [(view, dynamic_matmul_hits(view.output, writer.node)) for view in views]
        for reader, reached in sources:
            if len(reached) != 1:
                raise StructureError(f"{reader.node.name} feeds several attention inputs")
        return [(reader, next(iter(reached))) for reader, reached in sources], packed

    def _attention(self, readers, writer, hits) -> Attention:
        roles: dict[str, Linear] = {}
        scores = context = None
        sources, packed = self._sources(readers, writer, hits)
        for reader, (matmul, slot) in sources:
            is_scores = feeds_softmax(matmul)
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
        head_dim = find_head_dim(scores, roles["q"])
        q, k, v = roles["q"], roles["k"], roles["v"]
        return Attention(
            q=q, k=k, v=v, o=writer,
            num_heads=q.out_features // head_dim, num_kv_heads=k.out_features // head_dim,
            head_dim=head_dim, scores=scores, context=context,
            q_rotary=rope_output(q), k_rotary=rope_output(k), packed=packed)

    def _fused_attention(self, readers: list[Linear], writer: Linear, hits) -> Attention:
        """q/k/v reaching inputs 0, 1, 2 of one attention op, or one packed projection read whole by
        ``GroupQueryAttention``'s input 0 (the GenAI builder's QKV: columns ``[q | k | v]``)."""
        sources, packed = self._sources(readers, writer, hits)
        nodes = {id(node): node for _, (node, _) in sources}
        if len(nodes) != 1:
            raise StructureError(f"the linears before {writer.node.name} feed {len(nodes)} attention ops")
        node = next(iter(nodes.values()))
        slots = {slot: reader for reader, (_, slot) in sources}
        num_heads = node.attributes.get_int("num_heads", node.attributes.get_int("q_num_heads", 0))
        num_kv_heads = node.attributes.get_int("kv_num_heads", num_heads)
        whole = set(slots) == {0} and node.op_type == "GroupQueryAttention" and num_heads
        if whole:
            packed = slots[0]
            head_dim, rest = divmod(packed.out_features, num_heads + 2 * num_kv_heads)
            if rest:
                raise StructureError(f"cannot split the {packed.out_features} packed q/k/v columns of "
                                     f"{packed.node.name} into {num_heads} query and {num_kv_heads} key/value "
                                     "heads")
            q_end, k_end = num_heads * head_dim, (num_heads + num_kv_heads) * head_dim
            q, k, v = (packed.column_range("", 0, q_end), packed.column_range("", q_end, k_end),
                       packed.column_range("", k_end, packed.out_features))
        elif set(slots) == {0, 1, 2}:
            q, k, v = slots[0], slots[1], slots[2]
            head_dim = q.out_features // num_heads if num_heads else find_head_dim(node, q)
        else:
            raise StructureError(f"{node.op_type} {node.name} is fed by neither one packed q/k/v projection "
                                 "nor three separate ones")
        return Attention(q=q, k=k, v=v, o=writer, num_heads=q.out_features // head_dim,
                         num_kv_heads=k.out_features // head_dim, head_dim=head_dim, scores=None, context=None,
                         q_rotary=None if whole else rope_output(q), k_rotary=None if whole else rope_output(k),
                         fused=node, packed=packed)


def _name_roles(blocks: list[Block], final_norm: Norm, lm_head: Linear) -> None:
    for b in blocks:
        prefix = f"layers.{b.index}"
        b.attn_norm.name = f"{prefix}.input_layernorm"
        b.mlp_norm.name = f"{prefix}.post_attention_layernorm"
        for post_norm, role in ((b.attn_post_norm, "attention_output_norm"), (b.mlp_post_norm, "mlp_output_norm")):
            if post_norm is not None:
                post_norm.name = f"{prefix}.{role}"
        for role, lin in (("q_proj", b.attention.q), ("k_proj", b.attention.k),
                          ("v_proj", b.attention.v), ("o_proj", b.attention.o)):
            lin.name = f"{prefix}.self_attn.{role}"
        if b.attention.packed is not None:
            b.attention.packed.name = f"{prefix}.self_attn.qkv_proj"
        if b.mlp.packed is not None:
            b.mlp.packed.name = f"{prefix}.mlp.gate_up_proj"
        gated = b.mlp.gate is not None
        b.mlp.up.name = f"{prefix}.mlp.{'up_proj' if gated else 'fc1'}"
        b.mlp.down.name = f"{prefix}.mlp.{'down_proj' if gated else 'fc2'}"
        if gated:
            b.mlp.gate.name = f"{prefix}.mlp.gate_proj"
    final_norm.name = "norm"
    lm_head.name = "lm_head"
