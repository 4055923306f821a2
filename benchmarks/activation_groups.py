"""What int4 activations alone cost on SmolLM2 after `rotate`, per token and in groups of channels.

Weights stay float: every block linear's input goes through symmetric int4 quantize-dequantize
(clip ratio ``c``) with one scale per token or per ``g`` consecutive channels of a token, as
``insert_qdq`` writes it (``group``); the lm_head input stays float. The rotated graph runs in
PyTorch (:class:`oqcompile.torch_graph.TorchGraph`, the same logits as ORT), which makes each row
seconds instead of a compile. Perplexity on the first ``--tokens`` tokens of Pride and Prejudice
in windows of ``--seq`` (the accuracy-tests protocol). The table is printed and written to section
``activation-groups`` of docs/RESULTS.md.

    .venv/bin/python benchmarks/activation_groups.py [--tokens 2048] [--seq 512] [--out out/bench]
"""

from __future__ import annotations

import argparse
import pathlib

import report
from report import MODEL, export_step

# (channels per scale: None is one per token, clip ratio)
SETTINGS = [(None, 1.0), (None, 0.9), (None, 0.8), (64, 0.9), (64, 1.0), (32, 0.9), (32, 1.0), (16, 0.9),
            (16, 1.0)]


def activation_perplexities(source: str, count: int, seq: int) -> tuple[float, list[float]]:
    """Float perplexity of the rotated model, then one per :data:`SETTINGS`."""
    import torch

    import oqcompile
    from oqcompile.data import EVALUATION_BOOK, book_tokens
    from oqcompile.evaluate import graph_feeds, perplexity
    from oqcompile.passes.spinquant import fake_quantize
    from oqcompile.structure import analyze
    from oqcompile.torch_graph import TorchGraph

    model, _ = oqcompile.optimize(source, "rotate", portable=True)
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
    for group, clip in SETTINGS:
        results.append(score({node: quantized(group, clip) for node in block_linears}))
        print(f"int4 activations, {'per token' if group is None else f'groups of {group}'}, clip {clip}: "
              f"{results[-1]:.3f}", flush=True)
    return score({}), results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=2048)
    parser.add_argument("--seq", type=int, default=512)
    parser.add_argument("--out", default="out/bench")
    args = parser.parse_args()
    source = pathlib.Path(args.out) / f"{MODEL}.onnx"
    if not source.is_file():
        source.parent.mkdir(parents=True, exist_ok=True)
        report.measure(export_step, str(source))
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


if __name__ == "__main__":
    main()
