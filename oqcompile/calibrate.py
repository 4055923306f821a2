"""Streaming activation statistics through ONNX Runtime, on the calibration text.

The values to observe are outputs of temporary copies of the graph, cut into stages (one
transformer block each: see :func:`run_in_stages`); the calibration windows are run through
ORT one batch at a time and each observed value ``x`` (channels on the last axis, every
other axis counted as tokens) updates running sums only:

- per channel: ``min_j``, ``max_j`` (hence ``absmax_j`` and the midpoint
  ``m_j = (max_j + min_j) / 2``);
- per token: the largest per-token absmax ``max_t max_j |x_tj|``;
- optionally the Gram matrix ``XᵀX`` (``[channels, channels]``, float64), which GPTQ uses
  as its Hessian;
- optionally a fixed-size sample of token rows (evenly strided in every batch), for
  searches that need real activations (activation clip ratios, per-layer error tables).

Memory is therefore that of one stage's weights and one batch of activations plus the
sums, whatever the size of the model and the number of calibration tokens (ORT's own
calibrator runs the whole model and keeps every batch of every tensor).
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import logging
import pathlib
import shutil
import tempfile
from collections.abc import Callable, Iterator, Sequence

import numpy as np
import onnx_ir as ir
from tqdm import tqdm

from oqcompile.errors import OQError

__all__ = ["DEFAULT_CALIBRATION_TOKENS", "ActivationStats", "CalibrationData", "calibration_data", "collect_statistics", "run_in_stages",
           "stream_statistics", "text_calibration"]

logger = logging.getLogger(__name__)

DEFAULT_CALIBRATION_TOKENS = 128 * 1024  # of the calibration book


class CalibrationData:
    """Calibration token windows ``[windows, seq]`` and where they came from.

    Made from token ids directly, or by :func:`calibration_data`, which reads and tokenizes the
    calibration book on first use only: a recipe none of whose passes reads statistics never
    pays for it.
    """

    def __init__(self, windows: np.ndarray | None, source: str, batch: int = 1,
                 reader: Callable[[], tuple[np.ndarray, str]] | None = None):
        self._reader = reader or (lambda: (windows, source))
        self.batch = batch

    @functools.cached_property
    def _read(self) -> tuple[np.ndarray, str]:
        return self._reader()

    @property
    def windows(self) -> np.ndarray:
        return self._read[0]

    @property
    def source(self) -> str:  # e.g. "emma[:32768]"
        return self._read[1]

    @property
    def tokens(self) -> int:
        return int(self.windows.size)

    def digest(self) -> str:
        """A short hash of the token ids and window shape (recorded in the output's metadata)."""
        digest = hashlib.sha256(np.ascontiguousarray(self.windows, np.int64).tobytes())
        digest.update(str(self.windows.shape).encode())
        return digest.hexdigest()[:16]


def calibration_data(tokenizer: str | Callable[[], str], tokens: int, seq: int = 1024,
                     batch: int = 1) -> CalibrationData:
    """The first ``tokens`` tokens of the calibration book (Emma) in windows of ``seq``, read on first use.

    ``tokenizer`` is a model id or HF directory, or a function giving one (then also called on first use).
    """
    _check_token_count(tokens)
    if tokens < seq:
        raise OQError(f"--calib-tokens {tokens} is less than one window of {seq} tokens")

    def read() -> tuple[np.ndarray, str]:
        from oqcompile.data import CALIBRATION_BOOK, book_tokens

        return _windows(book_tokens(CALIBRATION_BOOK, tokenizer() if callable(tokenizer) else tokenizer), tokens, seq,
                        CALIBRATION_BOOK)

    return CalibrationData(None, "", batch, reader=read)


def text_calibration(text: str | Callable[[], str], name: str, tokenizer: str | Callable[[], str],
                     tokens: int | None = None, seq: int = 1024, batch: int = 1) -> CalibrationData:
    """The first ``tokens`` tokens (default: all) of a text of one's own, in windows of ``seq``,
    read and tokenized on first use (``text`` and ``tokenizer`` may be functions giving them);
    ``name`` says where the text came from in the output's metadata (e.g. its file name)."""
    if tokens is not None:
        _check_token_count(tokens)

    def read() -> tuple[np.ndarray, str]:
        from oqcompile.models import load_tokenizer

        tokenize = load_tokenizer(tokenizer() if callable(tokenizer) else tokenizer)
        ids = tokenize(text() if callable(text) else text, add_special_tokens=False)["input_ids"]
        return _windows(np.asarray(ids, dtype=np.int64), tokens, seq, name)

    return CalibrationData(None, "", batch, reader=read)


def _check_token_count(tokens: int) -> None:
    if tokens < 1:
        raise OQError(f"--calib-tokens must be positive, not {tokens}")


def _windows(ids: np.ndarray, tokens: int | None, seq: int, name: str) -> tuple[np.ndarray, str]:
    """The first ``tokens`` of ``ids`` (all if None, or if there are fewer, with a warning) in
    whole windows of ``seq``, and their source ``name[:count]``."""
    usable = (len(ids) if tokens is None else min(tokens, len(ids))) // seq * seq
    if usable == 0:
        raise OQError(f"calibration text {name}: {len(ids)} tokens, fewer than one window of {seq}")
    if tokens is not None and usable < tokens:
        logger.warning("calibration text %s has %d tokens: calibrating on %d, not %d", name, len(ids), usable, tokens)
    return ids[:usable].reshape(-1, seq), f"{name}[:{usable}]"


@dataclasses.dataclass
class ActivationStats:
    """Running statistics of one activation over its last axis (see module doc)."""

    channels: int
    with_gram: bool = False
    sample_rows_per_batch: int = 0
    tokens: int = dataclasses.field(default=0, init=False)
    minimum: np.ndarray = dataclasses.field(init=False)
    maximum: np.ndarray = dataclasses.field(init=False)
    token_absmax_max: float = dataclasses.field(default=0.0, init=False)
    gram: np.ndarray | None = dataclasses.field(default=None, init=False)
    samples: list[np.ndarray] = dataclasses.field(default_factory=list, init=False)

    def __post_init__(self):
        self.minimum = np.full(self.channels, np.inf)
        self.maximum = np.full(self.channels, -np.inf)
        if self.with_gram:
            self.gram = np.zeros((self.channels, self.channels))

    def update(self, batch: np.ndarray) -> None:
        x = batch.reshape(-1, self.channels)
        self.tokens += x.shape[0]
        self.minimum = np.minimum(self.minimum, x.min(axis=0))
        self.maximum = np.maximum(self.maximum, x.max(axis=0))
        self.token_absmax_max = max(self.token_absmax_max, float(np.abs(x).max()))
        if self.gram is not None:
            x32 = x.astype(np.float32)
            self.gram += x32.T @ x32
        if self.sample_rows_per_batch:
            stride = max(1, x.shape[0] // self.sample_rows_per_batch)
            self.samples.append(x[stride // 2::stride][: self.sample_rows_per_batch].astype(np.float32))

    @property
    def sample(self) -> np.ndarray:
        """The sampled token rows, ``[rows, channels]`` (empty without ``sample_tokens``)."""
        return np.concatenate(self.samples) if self.samples else np.zeros((0, self.channels), np.float32)

    @property
    def absmax(self) -> np.ndarray:
        return np.maximum(np.abs(self.minimum), np.abs(self.maximum))

    @property
    def midpoint(self) -> np.ndarray:
        return (self.maximum + self.minimum) / 2


def collect_statistics(model: ir.Model, values: Sequence[ir.Value], data: CalibrationData,
                       stages: Sequence[ir.Value] = (), gram: bool = False, sample_tokens: int = 0,
                       progress: bool = True) -> dict[str, ActivationStats]:
    """Statistics of ``values`` (by name) over ``data``: :func:`stream_statistics`, all stages merged."""
    stats: dict[str, ActivationStats] = {}
    for stage_stats in stream_statistics(model, values, data, stages, gram, sample_tokens, progress):
        stats.update(stage_stats)
    return stats


def stream_statistics(model: ir.Model, values: Sequence[ir.Value], data: CalibrationData,
                      stages: Sequence[ir.Value] = (), gram: bool = False, sample_tokens: int = 0,
                      progress: bool = True) -> Iterator[dict[str, ActivationStats]]:
    """Statistics of ``values`` over ``data``, computed one stage of the graph at a time
    (:func:`run_in_stages`).

    Yields, after each stage, the statistics of the values observed in it: a caller may
    rewrite that stage's part of the graph before the next stage runs (GPTQ does, to hold
    one block's Gram matrices at a time); later stages read the activations the graph had
    before. ``sample_tokens`` token rows of every value are kept, spread evenly over the
    batches. ``model`` is left as it was.
    """
    batches = [data.windows[start:start + data.batch] for start in range(0, len(data.windows), data.batch)]
    rows_per_batch = -(-sample_tokens // len(batches)) if sample_tokens else 0
    stats: dict[str, ActivationStats] = {}
    for arrays, last_batch in run_in_stages(model, values, batches, stages, progress):
        for name, array in arrays.items():
            if name not in stats:
                stats[name] = ActivationStats(array.shape[-1], with_gram=gram, sample_rows_per_batch=rows_per_batch)
            stats[name].update(array)
        if last_batch:
            yield stats
            stats = {}
    logger.info("calibrated %d values on %d tokens of %s", len(values), data.tokens, data.source)


def run_in_stages(model: ir.Model, values: Sequence[ir.Value], batches: Sequence[np.ndarray],
                  stages: Sequence[ir.Value] = (), progress: bool = True
                  ) -> Iterator[tuple[dict[str, np.ndarray], bool]]:
    """Run the graph on batches of token ids through ORT CPU, one stage at a time, and yield
    ``({name: array} of the observed values, whether this was the stage's last batch)``.

    ``stages`` are values that cut the graph in order (the residual stream after each block):
    stage ``k`` is every node needed for ``stages[k]`` and not for an earlier cut, the last
    stage whatever the remaining observed values need. Each stage is written as its own ONNX
    file and run over every batch; the values later stages read from it (the stream, and
    whatever the prologue computed once: masks, rotary tables) are kept per batch in a
    temporary folder, and ``Constant`` nodes are repeated in every stage that reads them. So
    ORT holds one stage's weights, not the model's, and a value is computed exactly as in the
    whole graph (same nodes, same inputs): the same to the bit whatever the cuts. With no cuts
    the whole graph is one stage. The graph may change between stages, but only in stages
    already run.
    """
    from oqcompile.evaluate import graph_feeds, session

    observed = list({v.name: v for v in values}.values())
    if any(not v.name or v.producer() is None for v in observed):
        raise OQError("only named values computed by the graph can be observed")
    plan = _plan_stages(model.graph, observed, stages)
    with tempfile.TemporaryDirectory(prefix="oq-stages-") as tmp, \
            tqdm(total=len(plan) * len(batches), desc="calibration", unit="batch", disable=not progress) as bar:
        kept = _KeptActivations(pathlib.Path(tmp))
        for index, stage in enumerate(plan):
            folder = pathlib.Path(tmp) / f"stage{index}"
            sess = session(_write_stage(model, stage, folder))
            shutil.rmtree(folder)  # ORT holds the weights now
            wanted = [spec.name for spec in sess.get_inputs()]
            names = [v.name for v in stage.observed]
            outputs = names + [name for name in stage.kept if name not in names]
            for number, ids in enumerate(batches):
                given = graph_feeds(model.graph, ids)
                inputs = {name: given[name] if name in given else kept.read(number, name) for name in wanted}
                arrays = dict(zip(outputs, sess.run(outputs, inputs)))
                for name in stage.kept:
                    kept.write(number, name, arrays[name])
                bar.update()
                last = number == len(batches) - 1
                if last:
                    sess = None  # its weights go before the caller works on this stage's values
                yield {name: arrays[name] for name in names}, last
            kept.forget(stage.last_read_here)


@dataclasses.dataclass
class _Stage:
    observed: list[ir.Value]  # observed values computed in this stage
    inputs: list[str]  # values of earlier stages it reads
    kept: list[str] = dataclasses.field(default_factory=list)  # its values later stages read
    last_read_here: list[str] = dataclasses.field(default_factory=list)  # kept values no later stage reads


def _plan_stages(graph: ir.Graph, observed: list[ir.Value], cuts: Sequence[ir.Value]) -> list[_Stage]:
    """Split the work of computing ``observed`` at ``cuts`` (see :func:`run_in_stages`)."""
    computed: dict[ir.Node, int] = {}  # node -> stage computing it
    stage_nodes: list[set[ir.Node]] = []
    for targets in [[cut] for cut in cuts] + [observed]:
        nodes = _ancestors(targets, computed)
        for node in nodes:
            computed.setdefault(node, len(stage_nodes))
        stage_nodes.append(nodes)
    plan = []
    for index, nodes in enumerate(stage_nodes):
        earlier = {value.name for node in nodes for value in node.inputs
                   if value is not None and value.producer() is not None and value.producer() not in nodes}
        plan.append(_Stage([v for v in observed if computed.get(v.producer()) == index], sorted(earlier)))
    producers = {value.name: computed[node] for node in computed for value in node.outputs}
    last_reader: dict[str, int] = {}
    for index, stage in enumerate(plan):
        for name in stage.inputs:
            if name not in last_reader:
                plan[producers[name]].kept.append(name)
            last_reader[name] = index
    for name, index in last_reader.items():
        plan[index].last_read_here.append(name)
    return [stage for stage in plan if stage.observed or stage.kept]


def _ancestors(targets: Sequence[ir.Value], computed: dict[ir.Node, int]) -> set[ir.Node]:
    """The nodes ``targets`` need that no earlier stage computed (``Constant`` nodes always)."""
    found: set[ir.Node] = set()
    pending = [value.producer() for value in targets]
    while pending:
        node = pending.pop()
        if node is None or node in found or (node in computed and node.op_type != "Constant"):
            continue
        found.add(node)
        pending.extend(value.producer() for value in node.inputs if value is not None)
    return found


def _write_stage(model: ir.Model, stage: _Stage, folder: pathlib.Path) -> pathlib.Path:
    """One stage as an ONNX file: a copy of the stage's nodes, whose inputs are the graph inputs the
    stage reads and the earlier values it reads, whose outputs are its observed and kept values."""
    produced = {value.name: value for node in model.graph for value in node.outputs}
    observed = {v.name for v in stage.observed}
    outputs = [*stage.observed, *(produced[name] for name in stage.kept if name not in observed)]
    earlier = [produced[name] for name in stage.inputs]
    # new nodes and values for what the outputs need; tensors shared, not copied
    graph = ir.convenience.extract(model.graph, [*model.graph.inputs, *earlier], outputs)
    used = [value for value in graph.inputs if value.uses()]
    graph.inputs.clear()
    graph.inputs.extend(used)
    stage_model = ir.Model(graph, ir_version=model.ir_version, functions=model.functions.values())
    for value in graph.initializers.values():  # its own mappings, dropped with the stage
        tensor = value.const_value
        if isinstance(tensor, ir.ExternalTensor):
            value.const_value = ir.ExternalTensor(tensor.location, tensor.offset, tensor.length, tensor.dtype,
                                                  shape=tensor.shape, name=tensor.name, base_dir=tensor.base_dir)
    folder.mkdir()
    path = folder / "stage.onnx"
    ir.save(stage_model, path, external_data="stage.onnx.data")
    return path


class _KeptActivations:
    """Stage outputs that later stages read, one ``.npy`` file per batch and value (read back mapped)."""

    def __init__(self, folder: pathlib.Path):
        self.folder = folder
        self.files: dict[str, list[pathlib.Path]] = {}
        self.numbers: dict[str, int] = {}  # value names are not always file names

    def write(self, batch: int, name: str, array: np.ndarray) -> None:
        number = self.numbers.setdefault(name, len(self.numbers))
        files = self.files.setdefault(name, [])
        files.append(self.folder / f"value{number}.batch{batch}.npy")
        np.save(files[-1], array)

    def read(self, batch: int, name: str) -> np.ndarray:
        return np.load(self.files[name][batch], mmap_mode="r")

    def forget(self, names: Sequence[str]) -> None:
        for name in names:
            for file in self.files.pop(name, []):
                file.unlink()
