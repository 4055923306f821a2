"""Quantize the weights of every block linear to 8, 6 or 4 bits (RTN or GPTQ).

Each weight ``W`` (``[in, out]``) becomes integer codes ``Q`` and scales ``s`` with
``W ≈ Ŵ = s ⊙ Q`` (per output channel, or per group of input rows), stored as an
integer initializer feeding ``DequantizeLinear`` (see :mod:`oqcompile.quant`):

- ``rtn``: ``Q = clip(round(W / s))``, ``s = clip · absmax / (2^(b-1) - 1)``, with the clip
  ratio searched per scale when ``clip_search`` is on;
- ``gptq``: GPTQ with the Hessian ``XᵀX`` of each linear's input, collected on the
  calibration text from the graph as it is when the pass runs (so after rotations), one
  transformer block at a time: a block's Gram matrices are held only until its linears are
  quantized.

With ``format="matmulnbits"`` (4 bits, groups) the linears become ORT's native
``com.microsoft.MatMulNBits`` instead of ``DequantizeLinear → MatMul``: a weight-only model
that any stock ORT runs with its own 4-bit kernels (``accuracy_level=0``: float compute).

Linears whose name matches a pattern of ``high_precision_layers`` (``fnmatch``, e.g.
``layers.29.mlp.down_proj``) are quantized to ``high_precision_bits`` instead. The lm_head
stays in float, as in QuaRot, unless ``lm_head_bits`` is set (a tied lm_head then gets its
own quantized copy; the embedding keeps the float table).
"""

from __future__ import annotations

import dataclasses
import logging

import onnx_ir as ir
from tqdm import tqdm

from oqcompile import quant
from oqcompile.graph import add_initializer, append_op, copy_type, matches, require_opset
from oqcompile.passes.base import CalibratedPass
from oqcompile.structure import Linear, Transformer, analyze

__all__ = ["QuantizeWeights"]

logger = logging.getLogger(__name__)


@dataclasses.dataclass
class QuantizeWeights(CalibratedPass):
    """Replace block linear weights by ``DequantizeLinear`` of int codes (see module doc)."""

    bits: int = 8
    method: str = "rtn"  # "rtn" or "gptq"
    group: int | None = None
    clip_search: bool = False
    act_order: bool = False
    damp: float = 0.01
    format: str = "qdq"  # or "matmulnbits"
    high_precision_layers: tuple[str, ...] = ()
    high_precision_bits: int = 8
    lm_head_bits: int | None = None
    name = "quantize_weights"

    def __post_init__(self):
        if self.format not in ("qdq", "matmulnbits"):
            raise ValueError(f"weight format must be qdq or matmulnbits, not {self.format!r}")
        if self.format == "matmulnbits" and (self.bits != 4 or self.group not in (16, 32, 64, 128, 256)):
            raise ValueError("matmulnbits needs bits = 4 and a group of 16, 32, 64, 128 or 256")
        quant.check_bits("weight", self.bits, self.high_precision_bits, self.lm_head_bits)
        if self.method not in ("rtn", "gptq"):
            raise ValueError(f"weight quantization method must be rtn or gptq, not {self.method!r}")

    @property
    def needs_calibration(self) -> bool:
        return self.method == "gptq"

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        transformer = analyze(model)
        require_opset(model, 21)  # INT4 codes and blocked (per-token/group) QDQ
        linears = [lin for lin in transformer.linears()
                   if lin is not transformer.lm_head or self.lm_head_bits is not None]
        if self.group is not None:
            for linear in linears:
                if linear.in_features % self.group:
                    raise ir.passes.PreconditionError(
                        f"group size {self.group} does not divide the {linear.in_features} inputs of {linear.name}")
        with tqdm(total=len(linears), desc=f"{self.method} w{self.bits}", disable=not self.progress) as bar:
            if self.method == "rtn":
                for linear in linears:
                    self._store(linear, quant.rtn(linear.weight(), self._bits(linear, transformer), self.group,
                                                  self.clip_search))
                    bar.update()
            else:  # one block's Gram matrices at a time, each block quantized once its inputs are seen
                for stats in self.stream_statistics(model, [lin.input for lin in linears], gram=True):
                    block = [lin for lin in linears if lin.input.name in stats]
                    for index, linear in enumerate(block):
                        last_reader = all(other.input.name != linear.input.name for other in block[index + 1:])
                        self._store(linear, quant.gptq(linear.weight(), stats[linear.input.name].gram,
                                                       self._bits(linear, transformer), self.group, self.damp,
                                                       self.act_order, self.clip_search, consume_gram=last_reader))
                        bar.update()
                    stats.clear()  # this block's Gram matrices go before the next block runs
        if self.format == "matmulnbits":
            model.opset_imports.setdefault("com.microsoft", 1)
        logger.info("quantized %d weights to int%d (%s)", len(linears), self.bits, self.method)
        return ir.passes.PassResult(model, modified=True)


    def _bits(self, linear: Linear, transformer: Transformer) -> int:
        if linear is transformer.lm_head:
            return self.lm_head_bits
        return self.high_precision_bits if matches(linear.name, self.high_precision_layers) else self.bits

    def _store(self, linear: Linear, quantized: quant.QuantizedWeight) -> None:
        if self.format == "matmulnbits" and quantized.bits == 4:
            _replace_with_matmulnbits(linear, quantized)
        else:
            linear.set_quantized_weight(quantized)


def _replace_with_matmulnbits(linear: Linear, weight: quant.QuantizedWeight) -> None:
    """Swap the MatMul/Gemm of ``linear`` for ``MatMulNBits(x, B, scales)`` (+ the old bias as ``Add``)."""
    graph = linear.node.graph
    packed, scales = quant.pack_matmulnbits(weight)
    float_type = (linear.output.dtype or ir.DataType.FLOAT).numpy()
    rows, cols = weight.codes.shape
    node = ir.node(
        "MatMulNBits",
        [linear.input, add_initializer(graph, f"{linear.name}.weight_packed_int4", packed),
         add_initializer(graph, f"{linear.name}.weight_scale", scales.astype(float_type))],
        attributes={"K": rows, "N": cols, "bits": 4, "block_size": weight.group, "accuracy_level": 0},
        domain="com.microsoft", name=f"{linear.name}/matmul_nbits",
        doc_string=f"int4 weight of {linear.name}, one scale per {weight.group} input rows (ORT MatMulNBits).")
    graph.insert_before(linear.node, node)
    matmul_output = linear.node.outputs[0]
    bias = linear.bias() if linear.node.op_type == "Gemm" and linear.bias_slot is not None else None
    copy_type(matmul_output, node.outputs[0])
    node.outputs[0].name = f"{linear.name}.output"
    matmul_output.replace_all_uses_with(node.outputs[0], replace_graph_outputs=True)
    graph.remove(linear.node, safe=True)
    if bias is not None:  # Gemm carried its bias inside
        append_op(node.outputs[0], "Add", add_initializer(graph, f"{linear.name}.bias", bias.astype(float_type)),
                  f"{linear.name}/bias")
