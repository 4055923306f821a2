"""Quantize the input activation of every block linear (``insert_qdq``).

For each distinct input value ``x`` of the block linears (q/k/v share the attention norm's
output, gate/up the MLP norm's; o_proj and down_proj each have their own, after their online
Hadamard if the graph has one), one QDQ subgraph ``x̂ = s · clip(round(x / s))`` is inserted
in front of those linears (:mod:`oqcompile.qdq`):

- ``granularity="per_token"``: dynamic symmetric per-token scales with ratio ``clip``; with
  ``group``, one scale per ``group`` consecutive channels of a token (finer scales follow a
  token's local range: on SmolLM2 after ``rotate``, int4 inputs alone at clip 0.9 cost 1.48·P
  per token, 1.25·P in groups of 32 and 1.19·P in groups of 16, docs/RESULTS.md section
  ``activation-groups``);
- ``granularity="per_tensor"``: one static scale ``clip · max|x| / (2^(b-1) - 1)`` from calibration;
- linears whose input OutlierTune has pre-scaled (:func:`oqcompile.qdq.mark_prescaled`)
  always get the scale-free static QDQ (``s = 1``), whatever ``granularity`` says.

With ``clip_search`` each per-token QDQ gets its own clip ratio: the one that minimizes
``‖(Q_c(X) - X) Ŵ‖`` over sampled calibration inputs ``X`` and the (already quantized)
weights ``Ŵ`` of the linears it feeds (:func:`oqcompile.quant.search_activation_clip`).

Inputs of linears matching ``high_precision_layers`` (``fnmatch`` patterns on names like
``layers.29.mlp.down_proj``) are quantized to ``high_precision_bits`` instead. The lm_head
input stays in float, as in QuaRot, unless ``lm_head_bits`` is set.
"""

from __future__ import annotations

import dataclasses
import logging
import os

import numpy as np
import onnx_ir as ir

from oqcompile import qdq
from oqcompile.graph import matches, require_opset
from oqcompile.passes.base import CalibratedPass
from oqcompile.quant import check_bits, qmax, search_activation_clip
from oqcompile.structure import Linear, analyze

__all__ = ["InsertQDQ"]

logger = logging.getLogger(__name__)


@dataclasses.dataclass
class InsertQDQ(CalibratedPass):
    """Insert an activation QDQ in front of every block linear (see module doc)."""

    bits: int = 8
    granularity: str = "per_token"  # or "per_tensor"
    clip: float = 1.0
    clip_search: bool = False
    group: int | None = None  # per-token scales per this many input channels (None: one per token)
    high_precision_layers: tuple[str, ...] = ()
    high_precision_bits: int = 8
    lm_head_bits: int | None = None
    name = "insert_qdq"

    SAMPLE_TOKENS = 1024  # calibration token rows per input for the clip search

    def __post_init__(self):
        check_bits("activation", self.bits, self.high_precision_bits, self.lm_head_bits)
        if self.granularity not in ("per_token", "per_tensor"):
            raise ValueError(f"granularity must be per_token or per_tensor, not {self.granularity!r}")
        if self.group is not None and (self.granularity != "per_token" or self.group < 1):
            raise ValueError(f"group must be a positive channel count of per_token scales, not {self.group!r}")

    @property
    def needs_calibration(self) -> bool:
        return self.granularity == "per_tensor" or self.clip_search

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        transformer = analyze(model)
        require_opset(model, 21)  # INT4 codes and blocked (per-token/group) QDQ
        groups: dict[str, list[Linear]] = {}
        for linear in transformer.linears():
            if linear is not transformer.lm_head or self.lm_head_bits is not None:
                groups.setdefault(linear.input.name, []).append(linear)
        if self.group is not None:  # before calibrating: a refusal must not cost the statistics
            for linears in groups.values():
                if not qdq.is_prescaled(linears[0].node) and linears[0].in_features % self.group:
                    raise ir.passes.PreconditionError(
                        f"{_group_name(linears)}: activation groups of {self.group} do not divide its "
                        f"{linears[0].in_features} input channels")
        stats = {}
        if self.needs_calibration:
            stats = self.statistics(model, [linears[0].input for linears in groups.values()],
                                    sample_tokens=self.SAMPLE_TOKENS if self.clip_search else 0)
        for value_name, linears in groups.items():
            prescaled = [qdq.is_prescaled(lin.node) for lin in linears]
            if any(prescaled) and not all(prescaled):
                raise ir.passes.PreconditionError(
                    f"{value_name} feeds linears of which only some are OutlierTune-prescaled")
            granularity = "prescaled" if all(prescaled) else self.granularity
            bits = (self.lm_head_bits if linears[0] is transformer.lm_head
                    else self.high_precision_bits if any(matches(lin.name, self.high_precision_layers) for lin in linears)
                    else self.bits)
            clip, scale = self.clip, None
            group = self.group if granularity == "per_token" else None
            if self.clip_search and granularity == "per_token":
                weight = np.concatenate([lin.weight().astype(np.float64) for lin in linears], axis=1)
                clip, error = search_activation_clip(stats[value_name].sample, weight, bits, group)
                logger.info("%s: activation clip %.2f (relative output error %.4f)",
                            _group_name(linears), clip, error)
            if granularity == "per_tensor":
                scale = clip * float(stats[value_name].absmax.max()) / qmax(bits)
            qdq.insert_activation_qdq(linears[0].input, [lin.node for lin in linears], bits=bits,
                                  granularity=granularity, name=_group_name(linears),
                                  channels=linears[0].in_features, clip=clip, scale=scale, group=group)
        logger.info("inserted %d activation QDQs (int%d)", len(groups), self.bits)
        return ir.passes.PassResult(model, modified=True)


def _group_name(linears: list[Linear]) -> str:
    """``layers.0.self_attn`` for q/k/v, the linear's own name when it reads its input alone."""
    if len(linears) == 1:
        return linears[0].name
    common = os.path.commonprefix([lin.name.split(".") for lin in linears])
    return ".".join(common)
