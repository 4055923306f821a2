"""Streaming activation statistics through ONNX Runtime, on the calibration text.

The values to observe are added as extra graph outputs of a temporary copy of the model;
the calibration windows are run through ORT one batch at a time and each observed value
``x`` (channels on the last axis, every other axis counted as tokens) updates running
sums only:

- per channel: ``min_j``, ``max_j`` (hence ``absmax_j`` and the midpoint
  ``m_j = (max_j + min_j) / 2``);
- per token: the largest per-token absmax ``max_t max_j |x_tj|``;
- optionally the Gram matrix ``XᵀX`` (``[channels, channels]``, float64), which GPTQ uses
  as its Hessian;
- optionally a fixed-size sample of token rows (evenly strided in every batch), for
  searches that need real activations (activation clip ratios, per-layer error tables).

Memory is therefore that of one batch of activations plus the sums, whatever the number
of calibration tokens (ORT's own calibrator keeps every batch of every tensor).
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import logging
import pathlib
import tempfile
from collections.abc import Callable, Sequence

import numpy as np
import onnx_ir as ir
from tqdm import tqdm

from oqcompile import modelio
from oqcompile.errors import OQError

__all__ = ["ActivationStats", "CalibrationData", "calibration_data", "collect_statistics"]

logger = logging.getLogger(__name__)


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
    if tokens < 1:
        raise OQError(f"--calib-tokens must be positive, not {tokens}")
    if tokens < seq:
        raise OQError(f"--calib-tokens {tokens} is less than one window of {seq} tokens")

    def read() -> tuple[np.ndarray, str]:
        from oqcompile.data import CALIBRATION_BOOK, book_tokens

        ids = book_tokens(CALIBRATION_BOOK, tokenizer() if callable(tokenizer) else tokenizer)
        windows = min(tokens, len(ids)) // seq
        return ids[: windows * seq].reshape(windows, seq), f"{CALIBRATION_BOOK}[:{windows * seq}]"

    return CalibrationData(None, "", batch, reader=read)


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
                       gram: bool = False, sample_tokens: int = 0,
                       progress: bool = True) -> dict[str, ActivationStats]:
    """Statistics of ``values`` (by name) over ``data``, run through ORT CPU (see module doc).

    ``sample_tokens`` token rows of every value are kept, spread evenly over the batches.

    ``model`` is left as it was: the observed values are graph outputs only in the
    temporary copy that ORT runs.
    """
    from oqcompile.evaluate import feeds, session

    unique = list({v.name: v for v in values}.values())
    if any(not v.name for v in unique):
        raise OQError("cannot observe an unnamed value")
    graph = model.graph
    original_outputs = list(graph.outputs)
    with tempfile.TemporaryDirectory(prefix="oq-calibrate-") as tmp:
        graph.outputs.extend(v for v in unique if v not in original_outputs)
        try:
            path = modelio.save(model, pathlib.Path(tmp) / "calibrate.onnx")
        finally:
            graph.outputs.clear()
            graph.outputs.extend(original_outputs)
        sess = session(path)
        names = [v.name for v in unique]
        stats: dict[str, ActivationStats] = {}
        batches = range(0, len(data.windows), data.batch)
        rows_per_batch = -(-sample_tokens // len(batches)) if sample_tokens else 0
        for start in tqdm(batches, desc="calibration", unit="batch", disable=not progress):
            outputs = sess.run(names, feeds(sess, data.windows[start:start + data.batch]))
            for name, array in zip(names, outputs):
                if name not in stats:
                    stats[name] = ActivationStats(array.shape[-1], with_gram=gram,
                                                  sample_rows_per_batch=rows_per_batch)
                stats[name].update(array)
    logger.info("calibrated %d values on %d tokens of %s", len(names), data.tokens, data.source)
    return stats
