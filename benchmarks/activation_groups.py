"""What int4 activations alone cost on SmolLM2 after `rotate`, per token and in groups of channels,
and (``--transforms``) after each channel transform: none, `rotate`, DuQuant, `rotate` + DuQuant.

Weights stay float: every block linear's input goes through symmetric int4 quantize-dequantize
(clip ratio ``c``) with one scale per token or per ``g`` consecutive channels of a token, as
``insert_qdq`` writes it (``group``); the lm_head input stays float. The rotated graph runs in
PyTorch (:class:`oqcompile.torch_graph.TorchGraph`, the same logits as ORT), which makes each row
seconds instead of a compile. Perplexity on the first ``--tokens`` tokens of Pride and Prejudice
in windows of ``--seq`` (the accuracy-tests protocol). The table is printed and written to section
``activation-groups`` (``activation-transforms`` with ``--transforms``; DuQuant calibrates on
the first 32,768 tokens of Emma) of docs/RESULTS.md.

    .venv/bin/python benchmarks/activation_groups.py [--transforms] [--tokens 2048] [--seq 512] [--out out/bench]
"""

from __future__ import annotations

import argparse
import pathlib

import report
from report import MODEL, export_step

# (channels per scale: None is one per token, clip ratio)
SETTINGS = [(None, 1.0), (None, 0.9), (None, 0.8), (64, 0.9), (64, 1.0), (32, 0.9), (32, 1.0), (16, 0.9),
            (16, 1.0)]
# --transforms: (label, passes before quantization), per-token scales at clip 1.0 and 0.9
ROTATE = [("fuse_norms", {}), ("rotate_residual", {}), ("rotate_heads", {}), ("rotate_qk", {}), ("online_hadamard", {}),
          ("cancel_rotations", {})]
TRANSFORMS = [("none (fuse_norms)", [("fuse_norms", {})]), ("rotate", ROTATE),
              ("duquant", [("fuse_norms", {}), ("duquant", {})]), ("rotate + duquant", [*ROTATE, ("duquant", {})])]
TRANSFORM_SETTINGS = [(None, 1.0), (None, 0.9)]
CALIBRATION_TOKENS = 32768


def activation_perplexities(source: str, count: int, seq: int, passes=ROTATE,
                            settings=SETTINGS) -> tuple[float, list[float]]:
    """Float perplexity of the model after ``passes``, then one per ``settings``."""
    import tempfile

    import torch

    import oqcompile
    from oqcompile.calibrate import calibration_data
    from oqcompile.data import EVALUATION_BOOK, book_tokens
    from oqcompile.evaluate import graph_feeds, perplexity
    from oqcompile.passes.spinquant import fake_quantize
    from oqcompile.recipes import recipe_toml
    from oqcompile.structure import analyze
    from oqcompile.torch_graph import TorchGraph

    with tempfile.TemporaryDirectory() as folder:
        recipe = pathlib.Path(folder) / "transform.toml"
        recipe.write_text(recipe_toml(passes))
        model, _ = oqcompile.optimize(source, str(recipe), portable=True,
                                      calibration=calibration_data(MODEL, CALIBRATION_TOKENS))
    transformer = analyze(model)
    graph = TorchGraph(model.graph)
    tokens = book_tokens(EVALUATION_BOOK, MODEL)[:count]

    def score(hooks) -> float:
        def logits_of(rows):
            feeds = {name: torch.from_numpy(value) for name, value in graph_feeds(model.graph, rows).items()}
            with torch.no_grad():
                return graph.run(feeds, hooks)[0].numpy()
        return perplexity(logits_of, tokens, seq=seq, progress=False).perplexity

    def quantized(group: int | None, clip: float):
        def hook(x, w):
            grouped = x.reshape(*x.shape[:-1], -1, group or x.shape[-1])
            return fake_quantize(grouped, 4, dim=-1, clip=clip).reshape(x.shape) @ w
        return hook

    block_linears = [linear.node for linear in transformer.linears() if linear is not transformer.lm_head]
    results = []
    for group, clip in settings:
        results.append(score({node: quantized(group, clip) for node in block_linears}))
        print(f"int4 activations, {'per token' if group is None else f'groups of {group}'}, clip {clip}: "
              f"{results[-1]:.3f}", flush=True)
    return score({}), results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--transforms", action="store_true",
                        help="compare channel transforms (section activation-transforms) instead of scale groups")
    parser.add_argument("--tokens", type=int, default=2048)
    parser.add_argument("--seq", type=int, default=512)
    parser.add_argument("--out", default="out/bench")
    args = parser.parse_args()
    source = pathlib.Path(args.out) / f"{MODEL}.onnx"
    if not source.is_file():
        source.parent.mkdir(parents=True, exist_ok=True)
        report.measure(export_step, str(source))
    if args.transforms:
        transforms_section(str(source), args.tokens, args.seq)
        return
    (fp, results), seconds, _ = report.measure(activation_perplexities, str(source), args.tokens, args.seq)
    rows = [["float (rotate)", "", f"{fp:.3f}", "1.000"]]
    rows += [["per token" if group is None else f"groups of {group}", f"{clip}", f"{value:.3f}", f"{value / fp:.3f}"]
             for (group, clip), value in zip(SETTINGS, results)]
    table = report.markdown_table(["int4 activation scales", "clip", "perplexity", "×P"], rows)
    print(table)
    report.write_section("activation-groups", "SmolLM2 after `rotate`: int4 activations alone, per token and in "
                         "groups", f"""
Every block linear's input through symmetric int4 quantize-dequantize (float weights, float
lm_head input), run in PyTorch from the rotated graph; perplexity on the first {args.tokens}
tokens of Pride and Prejudice in windows of {args.seq}. P is the rotated float model's. Run
time {seconds:.0f} s.

{table}
""")


def transforms_section(source: str, tokens: int, seq: int) -> None:
    rows, total = [], 0.0
    for label, passes in TRANSFORMS:
        (fp, results), seconds, _ = report.measure(activation_perplexities, source, tokens, seq, passes,
                                                   TRANSFORM_SETTINGS)
        total += seconds
        rows += [[label, f"{clip}", f"{fp:.3f}", f"{value:.3f}", f"{value / fp:.3f}"]
                 for (_, clip), value in zip(TRANSFORM_SETTINGS, results)]
    table = report.markdown_table(["channel transform", "clip", "float perplexity P", "int4 per token",
                                   "×P"], rows)
    print(table)
    report.write_section("activation-transforms", "SmolLM2: int4 activations alone after each channel transform",
                         f"""
Every block linear's input through symmetric int4 quantize-dequantize with one scale per token
(float weights, float lm_head input), run in PyTorch from the transformed graph; perplexity on
the first {tokens} tokens of Pride and Prejudice in windows of {seq}. `duquant` (blocks of up
to 128, 64 greedy steps, 512 sampled rows per input) calibrates on the first {CALIBRATION_TOKENS}
tokens of Emma. Every transform is exact in float (P equal up to rounding). Run time {total:.0f} s.

{table}
""")


if __name__ == "__main__":
    main()
