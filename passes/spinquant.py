"""SpinQuant: learn R1 and the per-head R2 so that the *quantized* model loses least, then fold them.

QuaRot's residual rotation ``R1`` (hidden x hidden) and per-head rotation ``R2`` (head size,
one per block) are random Hadamard matrices: any orthogonal matrix keeps the float function
(``rotate_residual``, ``rotate_heads``), but they differ in what quantization then loses.
SpinQuant (arXiv 2405.16406) learns them on calibration text. Each linear ``y = x W`` of the
rotated, quantized model computes

    y = (Q_a(x A) · Q_w(Aᵀ W B)) Bᵀ

seen from the unrotated graph, with ``A`` the rotation its input carries and ``B`` the one its
output carries (readers of the stream: ``A = R1``; v: ``B = I ⊗ R2``; o_proj:
``A = (I ⊗ R2) H``, ``B = R1``, ``H`` its online Hadamard; down_proj: ``A = H``, its online
R4, ``B = R1``), ``Q_a`` per-token and ``Q_w`` per-channel round-to-nearest fake
quantization (rounding passed straight through to the gradient; with ``bits=None`` the
weights stay float, as SpinQuant trains before GPTQ). The lm_head stays float in training: its
8-bit quantization costs little, and rotating its vocabulary-wide weight would double each
step. Because the norms are scale-free (``fuse_norms`` first) and ``B Bᵀ = I``, this equals
the rotated model's forward, so the graph itself is trained
(:class:`oqcompile.torch_graph.TorchGraph`, whose float logits match ORT's), with only the
linears replaced. ``R1`` and every ``R2`` are orthogonal by construction (Cayley
parametrization of ``torch.nn.utils.parametrizations.orthogonal``, starting from the seeded
random Hadamards QuaRot uses) and trained with Adam on the next-token cross-entropy of the
calibration windows. The learned matrices are then folded exactly as ``rotate_residual`` and
``rotate_heads`` fold theirs (with the online Hadamard at o_proj), so the pass leaves the float
function unchanged; ``online_hadamard`` (R4) and the quantization passes follow in the recipe.
The whole float model is held in PyTorch (float32) while it trains.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable

import numpy as np
import onnx_ir as ir
import torch
from torch.nn.utils import parametrize
from torch.nn.utils.parametrizations import orthogonal
from tqdm import tqdm

from oqcompile.evaluate import graph_feeds
from oqcompile.hadamard import hadamard, random_hadamard
from oqcompile.passes.base import CalibratedPass
from oqcompile.passes.rotate_heads import rotate_heads
from oqcompile.passes.rotate_residual import post_norm_blocking_rotation, rotate_residual_stream
from oqcompile.structure import Linear, analyze
from oqcompile.torch_graph import TorchGraph

__all__ = ["SpinQuant", "fake_quantize"]

logger = logging.getLogger(__name__)


def fake_quantize(x: torch.Tensor, bits: int, dim: int, clip: float = 1.0) -> torch.Tensor:
    """Symmetric round-to-nearest of ``x`` with one scale per slice along ``dim``
    (``clip · absmax / (2^(bits-1) - 1)``), the rounding's gradient passed straight through."""
    top = 2 ** (bits - 1) - 1
    scale = (clip * x.abs().amax(dim=dim, keepdim=True) / top).clamp_min(1e-8)
    rounded = torch.clamp(torch.round(x / scale), -top - 1, top) * scale
    return x + (rounded - x).detach()


def _orthogonal(matrix: np.ndarray) -> torch.nn.Module:
    """A bias-free linear whose weight is ``matrix`` and stays orthogonal (Cayley parametrization)."""
    module = torch.nn.Linear(*matrix.shape, bias=False)
    with torch.no_grad():
        module.weight.copy_(torch.from_numpy(matrix.astype(np.float32)))
    return orthogonal(module, orthogonal_map="cayley")


@dataclasses.dataclass
class _Rotations:
    """``A`` and ``B`` of one linear (see module doc) as functions of the learned matrices (``B``: None for I)."""

    linear: Linear
    inputs: Callable[[], torch.Tensor]
    outputs: Callable[[], torch.Tensor] | None
    weight_bits: int | None
    act_bits: int


@dataclasses.dataclass
class SpinQuant(CalibratedPass):
    """Learn R1 and each block's R2 for ``bits``-bit weights and ``act_bits``-bit activations,
    then fold them (see module doc)."""

    bits: int | None = None  # weights' bits in training; None: float (GPTQ follows, as in SpinQuant)
    act_bits: int = 4
    clip: float = 0.9  # activation clip ratio, as the quantization pass that follows
    steps: int = 100
    sequence: int = 256  # tokens per training step, cut from the calibration windows
    learning_rate: float = 1e-3
    seed: int = 0
    name = "spinquant"

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        transformer = analyze(model)
        post_norm = post_norm_blocking_rotation(transformer)
        if post_norm is not None:
            raise ir.passes.PreconditionError(
                f"spinquant learns the stream rotation R1, which cannot pass the post-norm {post_norm.name} "
                "(rms(xQ) g is not rms(x) g Q); use a quarot recipe, whose other rotations still run")
        hidden = transformer.hidden_size
        torch.manual_seed(self.seed)
        r1 = _orthogonal(random_hadamard(hidden, self.seed))
        r2 = [_orthogonal(random_hadamard(block.attention.head_dim, self.seed + 1)) for block in transformer.blocks]
        hooks = self._hooks(transformer, r1, r2)
        graph = TorchGraph(model.graph)
        windows = self._calibration(model).windows
        sequence = min(self.sequence, windows.shape[1])
        windows = windows[:, :windows.shape[1] // sequence * sequence].reshape(-1, sequence)
        optimizer = torch.optim.Adam([p for m in (r1, *r2) for p in m.parameters()], lr=self.learning_rate)
        losses = []
        with tqdm(total=self.steps, desc="spinquant", disable=not self.progress) as bar:
            for step in range(self.steps):
                window = windows[step % len(windows)][None]
                feeds = {name: torch.from_numpy(value) for name, value in graph_feeds(model.graph, window).items()}
                optimizer.zero_grad()
                with parametrize.cached():  # each orthogonal matrix formed once a step, not once a linear
                    logits = graph.run(feeds, hooks)[0]
                    loss = torch.nn.functional.cross_entropy(logits[0, :-1], torch.from_numpy(window[0, 1:]).long())
                    loss.backward()
                optimizer.step()
                losses.append(loss.item())
                bar.set_postfix(loss=f"{losses[-1]:.3f}")
                bar.update()
        self.training_losses = losses  # per step, for a caller that wants to see the training
        if losses:
            logger.info("spinquant: loss %.4f -> %.4f over %d steps", losses[0], losses[-1], len(losses))
        with torch.no_grad():
            learned_r1 = r1.weight.double().numpy()
            learned_r2 = [m.weight.double().numpy() for m in r2]
        rotate_residual_stream(model, learned_r1)
        rotate_heads(model, lambda block: learned_r2[block.index], online=True)
        return ir.passes.PassResult(model, modified=True)

    def _hooks(self, transformer, r1: torch.nn.Module, r2: list[torch.nn.Module]) -> dict:
        """One ``(x, w) -> y`` per linear node: its rotations, then fake quantization."""
        def kron_eye(count: int, module: torch.nn.Module):
            return lambda: torch.block_diag(*([module.weight] * count))

        def residual() -> torch.Tensor:
            return r1.weight

        def rotations(linear: Linear, inputs: Callable, outputs: Callable | None = None) -> _Rotations:
            return _Rotations(linear, inputs, outputs, self.bits, self.act_bits)

        specs: list[_Rotations] = []
        for block, per_head in zip(transformer.blocks, r2):
            attention, mlp = block.attention, block.mlp
            o_online = torch.from_numpy(hadamard(attention.o.in_features).astype(np.float32))
            down_online = torch.from_numpy(hadamard(mlp.down.in_features).astype(np.float32))
            heads = kron_eye(attention.num_heads, per_head)
            specs += [rotations(attention.q, residual), rotations(attention.k, residual),
                      rotations(attention.v, residual, kron_eye(attention.num_kv_heads, per_head)),
                      rotations(attention.o, lambda heads=heads, h=o_online: heads() @ h, residual)]
            specs += [rotations(linear, residual) for linear in mlp.readers]
            specs.append(rotations(mlp.down, lambda h=down_online: h, residual))
        by_node: dict[ir.Node, list[_Rotations]] = {}
        for spec in specs:
            by_node.setdefault(spec.linear.node, []).append(spec)
        return {node: self._hook(node_specs) for node, node_specs in by_node.items()}

    def _hook(self, specs: list[_Rotations]):
        """``(x, w) -> y`` for one node: its roles (several for a packed projection) share the input
        rotation, and each column range carries its own output rotation."""
        first = specs[0]

        def output_rotation(width: int) -> torch.Tensor | None:
            if all(spec.outputs is None for spec in specs):
                return None
            blocks, covered = [], 0
            for spec in sorted(specs, key=lambda s: (s.linear.columns or (0, width))[0]):
                start, stop = spec.linear.columns or (0, width)
                if start > covered:
                    blocks.append(torch.eye(start - covered))
                blocks.append(spec.outputs() if spec.outputs is not None else torch.eye(stop - start))
                covered = stop
            if covered < width:
                blocks.append(torch.eye(width - covered))
            return torch.block_diag(*blocks)

        def hook(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
            a, b = first.inputs(), output_rotation(w.shape[-1])
            rotated_w = a.T @ w if b is None else a.T @ w @ b
            if first.weight_bits is not None:
                rotated_w = fake_quantize(rotated_w, first.weight_bits, 0)
            y = fake_quantize(x @ a, first.act_bits, -1, self.clip) @ rotated_w
            return y if b is None else y @ b.T

        return hook
